// `npm install` hook: build the simulated device addon with cmake-js. A failed build must not fail the
// install (the reference path works without it), so on failure we record why in
// native/build/UNAVAILABLE.txt — ascend/native.ts loadNative() reports that reason — and exit 0.
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const buildDir = join(here, 'build');
const unavailable = join(buildDir, 'UNAVAILABLE.txt');

function giveUp(reason) {
  mkdirSync(buildDir, { recursive: true });
  rmSync(join(buildDir, 'Release', 'ds4_sim.node'), { force: true }); // never leave a stale addon behind
  writeFileSync(unavailable, reason.trim() + '\n');
  process.stderr.write(`ds4-diff: warning: simulated device addon not built (${reason.trim().split('\n')[0]}); ` +
    'device commands will report the backend as unavailable\n');
  process.exit(0);
}

let cmakeJs;
try {
  cmakeJs = join(dirname(createRequire(import.meta.url).resolve('cmake-js/package.json')), 'bin', 'cmake-js');
} catch {
  giveUp('cmake-js is not installed');
}
rmSync(unavailable, { force: true });
const r = spawnSync(process.execPath, [cmakeJs, 'compile', '--directory', here, '--out', buildDir],
  { stdio: ['ignore', 'inherit', 'pipe'], encoding: 'utf8' });
if (r.status !== 0) {
  const lines = (r.stderr || r.error?.message || '').trim().split('\n');
  const cause = [...lines].reverse().find((l) => /error/i.test(l)) ?? lines[lines.length - 1] ?? '';
  process.stderr.write(r.stderr || '');
  giveUp(`cmake-js compile failed (exit ${r.status}): ${cause.replace(/^ERROR OMG /, '').trim()}\n${lines.slice(-15).join('\n')}`);
}
