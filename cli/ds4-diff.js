#!/usr/bin/env node
// Entry: the compiled JavaScript beside the TypeScript (cli/build.mjs, run by `npm ci`), so the CLI starts
// without compiling anything; in a checkout whose TypeScript changed since the last build, the sources
// themselves through tsx's loader (slower to start, the same program).
import { compiledIsCurrent } from './sources.mjs';

let main;
if (compiledIsCurrent()) {
  ({ main } = await import('./main.js'));
} else {
  const { register } = await import('tsx/esm/api');
  register();
  ({ main } = await import('./main.ts'));
}
await main(process.argv);
