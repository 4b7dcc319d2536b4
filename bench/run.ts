// `npm run bench -- [--only NAME] [--json] [--ds4 PATH] [--reps N] [--long] [--ds4-diff DIR]`: every
// benchmark, figures measured in one run and reported next to this machine's own bandwidth and, given a
// ds4 binary built with `make cpu`, next to ds4.c's CPU path (ratios); one JSON object with --json.
import { benchCalibrate } from './calibrate.ts';
import { benchCapture } from './capture.ts';
import type { Figures } from './measure.ts';
import { benchSpeed } from './speed.ts';

const args = process.argv.slice(2);
const opt = (name: string): string | undefined => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);

const BENCHES: Array<{ name: string; run: () => Promise<Figures> }> = [
  { name: 'speed', run: () => benchSpeed({ ds4: opt('--ds4'), reps: Number(opt('--reps') ?? 5), long: args.includes('--long'), checkout: opt('--ds4-diff') }) },
  { name: 'calibrate', run: benchCalibrate },
  { name: 'capture', run: benchCapture },
];

const json = args.includes('--json');
const only = opt('--only');
const all: Figures = {};
for (const b of BENCHES) {
  if (only && b.name !== only) continue;
  process.stderr.write(`bench: ${b.name}...\n`);
  Object.assign(all, await b.run());
}
if (json) process.stdout.write(JSON.stringify(all) + '\n');
else for (const [k, v] of Object.entries(all)) process.stdout.write(`${k.padEnd(52)} ${typeof v === 'number' ? v.toPrecision(4) : v}\n`);
