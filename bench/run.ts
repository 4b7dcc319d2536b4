// `npm run bench [-- --json] [-- --only NAME]`: every benchmark, figures measured in one run and
// reported next to this machine's own bandwidth (ratios), printed as one JSON object with --json.
import { benchCalibrate } from './calibrate.ts';
import { benchCapture } from './capture.ts';
import { benchDevice } from './device.ts';
import type { Figures } from './measure.ts';
import { benchReference } from './reference.ts';

const BENCHES: Array<{ name: string; run: () => Promise<Figures> }> = [
  { name: 'reference', run: benchReference },
  { name: 'device', run: benchDevice },
  { name: 'calibrate', run: benchCalibrate },
  { name: 'capture', run: benchCapture },
];

const args = process.argv.slice(2);
const json = args.includes('--json');
const only = args.includes('--only') ? args[args.indexOf('--only') + 1] : undefined;
const all: Figures = {};
for (const b of BENCHES) {
  if (only && b.name !== only) continue;
  process.stderr.write(`bench: ${b.name}...\n`);
  Object.assign(all, await b.run());
}
if (json) process.stdout.write(JSON.stringify(all) + '\n');
else for (const [k, v] of Object.entries(all)) process.stdout.write(`${k.padEnd(44)} ${typeof v === 'number' ? v.toPrecision(4) : v}\n`);
