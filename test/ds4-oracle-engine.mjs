#!/usr/bin/env node
// A recorded ds4 run played back as an engine, for `ds4-diff engine` tests: the real ds4.c output of
// test/fixtures/ds4-oracle-case (its README says how it was made). Usage:
//   node test/ds4-oracle-engine.mjs --case DIR [ds4 arguments, ignored]
// DIR holds the case's stderr.txt, stdout.txt and its extracted dumps/ directory. Every `ds4: dumped NAME
// layer L pos P to FILE` line of the recorded stderr is replayed in order: the recorded file is copied to
// where DS4_METAL_GRAPH_DUMP_PREFIX says (as ds4 writes it, `<prefix>_<name>-<layer>_pos<pos>.<ext>`) and
// the line printed with that path; then the recorded stdout. ds4's DUMP_NAME/LAYER/POS filters are not
// applied (the recording holds every dump). Exit 0, as the recorded run did.
import { copyFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const args = process.argv.slice(2);
const at = args.indexOf('--case');
if (at < 0 || !args[at + 1]) {
  process.stderr.write('usage: ds4-oracle-engine.mjs --case DIR [ds4 arguments]\n');
  process.exit(2);
}
const dir = args[at + 1];
const prefix = process.env.DS4_METAL_GRAPH_DUMP_PREFIX;
// the recorded stderr also holds progress printed without a newline: take the `ds4: dumped` substrings
const line = /ds4: dumped (\S+) layer (\d+) pos (\d+) to (\S+)/g;
for (const m of readFileSync(join(dir, 'stderr.txt'), 'utf8').matchAll(line)) {
  const [, name, layer, pos, recorded] = m;
  const ext = recorded.endsWith('.i32') ? 'i32' : 'bin';
  if (prefix) {
    const to = `${prefix}_${name}-${layer}_pos${pos}.${ext}`;
    copyFileSync(join(dir, 'dumps', `ds4_${name}-${layer}_pos${pos}.${ext}`), to);
    process.stderr.write(`ds4: dumped ${name} layer ${layer} pos ${pos} to ${to}\n`);
  }
}
process.stdout.write(readFileSync(join(dir, 'stdout.txt')));
