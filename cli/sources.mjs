// The runtime TypeScript sources and whether their compiled JavaScript (cli/build.mjs) is current:
// shared by the build and by the entry (cli/ds4-diff.js), which runs the sources through tsx when it is not.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
/** The top-level help the build saved (cli/build.mjs). */
export const HELP_FILE = join(ROOT, 'cli', 'help.txt');

/** The folders the CLI runs from (test/ and bench/ run through tsx). */
const RUNTIME_DIRS = ['model', 'reference', 'ascend', 'diff', 'reports', 'cli'];

function sourcesIn(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourcesIn(join(dir, e.name)) : e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [join(dir, e.name)] : []);
}

export function runtimeSources() {
  return RUNTIME_DIRS.flatMap((d) => sourcesIn(join(ROOT, d)));
}

/** Every runtime source has a .js beside it written after it (a few hundred stats: ~1 ms). */
export function compiledIsCurrent() {
  return runtimeSources().every((ts) => {
    const js = ts.replace(/\.ts$/, '.js');
    return existsSync(js) && statSync(js).mtimeMs >= statSync(ts).mtimeMs;
  });
}
