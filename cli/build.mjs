// `npm run build` (also run by `npm ci` / `npm install` as `prepare`): compile every runtime TypeScript
// module to a JavaScript module beside it (model/quant/f16.ts → model/quant/f16.js), so the CLI starts
// without compiling anything. TypeScript's per-file transpiler (no type check: `npm run typecheck` does
// that) with its relative imports rewritten to the .js siblings; each file keeps its place, so everything
// found relative to a module (package.json, baselines/, kernels/budgets.json, native/) is where it was.
// Module-level `const`s stay `const` (a bundler would make them `var`): V8 compiles a constant typed
// array's loads in the hot loops much tighter (model/quant/q8.ts CODES).
// Then the top-level help, as the compiled CLI prints it, into cli/help.txt: `ds4-diff --help` prints that
// file instead of loading every command (cli/ds4-diff.js).
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import ts from 'typescript';
import { HELP_FILE, runtimeSources } from './sources.mjs';

const compilerOptions = {
  module: ts.ModuleKind.ESNext,
  target: ts.ScriptTarget.ES2022,
  rewriteRelativeImportExtensions: true,
};

for (const file of runtimeSources()) {
  const { outputText, diagnostics } = ts.transpileModule(readFileSync(file, 'utf8'), { compilerOptions, fileName: file, reportDiagnostics: true });
  if (diagnostics?.length) throw new Error(`${file}: ${ts.flattenDiagnosticMessageText(diagnostics[0].messageText, ' ')}`);
  writeFileSync(file.replace(/\.ts$/, '.js'), outputText);
}

rmSync(HELP_FILE, { force: true });
const help = spawnSync(process.execPath, [new URL('./ds4-diff.js', import.meta.url).pathname, '--help'], { encoding: 'utf8' });
if (help.status !== 0) throw new Error(`ds4-diff --help failed after the build: ${help.stderr.trim()}`);
writeFileSync(HELP_FILE, help.stdout);
