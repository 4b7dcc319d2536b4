// `npx tsx test/capture-digest.ts RUN_DIR...`: one line per dump of each run directory — its side, its
// record count and a sha256 over every record's key, dtype, shape and value bits, taken in key order (so
// the order a pass emits its records in does not matter, the values do). Two builds whose runs print the
// same lines captured bit-identical stages: the check that a speed-up changed no number.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { readDump } from '../diff/dump.ts';
import { recordKey } from '../model/stages.ts';

async function digest(file: string): Promise<{ side: string; records: number; sha: string }> {
  const { meta, records } = await readDump(file);
  records.sort((a, b) => (recordKey(a) < recordKey(b) ? -1 : recordKey(a) > recordKey(b) ? 1 : 0));
  const h = createHash('sha256');
  for (const r of records) {
    h.update(`${recordKey(r)}|${r.token}|${r.dtype}|${r.shape.join('x')}|`);
    h.update(new Uint8Array(r.values.buffer, r.values.byteOffset, r.values.byteLength));
  }
  return { side: meta.side, records: records.length, sha: h.digest('hex') };
}

for (const dir of process.argv.slice(2)) {
  for (const f of fs.readdirSync(dir).filter((x) => x.endsWith('.arrow')).sort()) {
    const d = await digest(path.join(dir, f));
    process.stdout.write(`${path.basename(dir)} ${d.side.padEnd(16)} ${String(d.records).padStart(7)} ${d.sha}\n`);
  }
}
