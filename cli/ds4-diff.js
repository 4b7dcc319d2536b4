#!/usr/bin/env node
// Entry: the compiled JavaScript beside the TypeScript (cli/build.mjs, run by `npm ci`), so the CLI starts
// without compiling anything — and `ds4-diff --help` prints the help the build saved, without loading a
// command; in a checkout whose TypeScript changed since the last build, the sources themselves through
// tsx's loader (slower to start, the same program).
import { existsSync, readFileSync } from 'node:fs';
import { HELP_FILE, compiledIsCurrent } from './sources.mjs';

const args = process.argv.slice(2);
const current = compiledIsCurrent();
if (current && args.length === 1 && (args[0] === '--help' || args[0] === '-h') && existsSync(HELP_FILE)) {
  process.stdout.write(readFileSync(HELP_FILE, 'utf8'));
} else {
  let main;
  if (current) {
    ({ main } = await import('./main.js'));
  } else {
    const { register } = await import('tsx/esm/api');
    register();
    ({ main } = await import('./main.ts'));
  }
  await main(process.argv);
}
