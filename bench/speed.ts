// The speed figures (issue 16): ds4-diff as whole processes on the real-dims file (the sparse ds4-flash
// preset with layer 0 populated, generated once into the cache), next to ds4.c's CPU path on the same file
// when a ds4 binary is given (`make cpu` of antirez/ds4): the two run alternately in every repetition,
// medians over the repetitions, and the ratios. One token through layer 0 + the output head is ds4's
// `--head-test -p Hello --nothink` (its last token, </think> = 128816) against `--tokens 128816 --layer 0`;
// both must name the same top token. `checkout` measures another checkout's CLI (the one before a change).
import { spawnSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compiledIsCurrent } from '../cli/sources.mjs';
import { flashLayer0 } from './flash-fixture.ts';
import { alternate, machine, median, scratch, summarize, type Command, type Figures } from './measure.ts';

export interface SpeedOptions {
  /** a ds4 binary built with `make cpu`, to pair against */
  ds4?: string;
  reps: number;
  /** also 256 tokens of prefill */
  long: boolean;
  /** the checkout whose CLI is measured (default: this one) */
  checkout?: string;
}

const ROOT = resolve(fileURLToPath(import.meta.url), '..', '..');
/** ds4's last token of `-p Hello --nothink` (</think>): the one token both sides run */
const TOKEN = 128816;
const HELLO = 'Hello';

export async function benchSpeed(o: SpeedOptions): Promise<Figures> {
  const { ds4, reps } = o;
  const checkout = resolve(o.checkout ?? ROOT);
  if (!(reps >= 1)) throw new Error('--reps must be at least 1');
  if (checkout === ROOT && !compiledIsCurrent()) {
    process.stderr.write('bench: the compiled JavaScript is older than the sources: building it (npm run build)\n');
    spawnSync(process.execPath, [join(ROOT, 'cli', 'build.mjs')], { stdio: 'inherit' });
  }
  const model = await flashLayer0();
  const cli = (label: string, ...a: string[]): Command => ({ label, argv: [process.execPath, join(checkout, 'cli', 'ds4-diff.js'), ...a] });
  const ds4Cmd = (label: string, ...a: string[]): Command => ({ label, argv: [ds4!, '-m', model, ...a] });
  const figures: Figures = { ...machine(), 'bench.reps': reps, 'bench.model': model };
  const runs = scratch();
  let dirs = 0;
  const outDir = () => join(runs.dir, `run${dirs++}`);

  const record = (name: string, group: Command[], check?: (label: string, stdout: string) => void): void => {
    process.stderr.write(`bench: ${name} (${reps} × ${group.map((c) => c.label).join(', ')})\n`);
    const byLabel = alternate(group, reps, check);
    for (const [label, rs] of byLabel) {
      const s = summarize(rs);
      figures[`${name}.${label}.wall_s`] = s.wallS;
      figures[`${name}.${label}.cpu_s`] = s.cpuS;
      figures[`${name}.${label}.peak_rss_bytes`] = s.maxRssBytes;
    }
    if (group.length === 2) {
      const [a, b] = group.map((c) => byLabel.get(c.label)!);
      // per repetition: the pair ran back to back, so their ratio is the least disturbed by the machine's load
      figures[`${name}.ratio`] = median(b.map((r, i) => r.wallS / a[i].wallS));
    }
  };

  try {
    const tops = new Map<string, string | undefined>();
    const sameTop = (label: string, stdout: string) => tops.set(label, topToken(label, stdout));
    const ds4HeadTest = ds4 ? [ds4Cmd('ds4.c', '--head-test', '-p', HELLO, '--nothink')] : [];
    record('reference_1_token', [...ds4HeadTest, cli('ds4-diff', 'reference', '-m', model, '--tokens', String(TOKEN), '--layer', '0')], sameTop);
    if (ds4 && tops.get('ds4.c') !== tops.get('ds4-diff')) throw new Error(`the pair does not compute the same thing: top token ${tops.get('ds4.c')} (ds4.c) vs ${tops.get('ds4-diff')} (ds4-diff)`);
    record('run_1_token', [...ds4HeadTest, cli('ds4-diff', 'run', '-m', model, '--tokens', String(TOKEN), '--layer', '0', '--no-baseline', '--force', '--out', outDir())]);
    record('tokenize', [...(ds4 ? [ds4Cmd('ds4.c', '--dump-tokens', '-p', HELLO)] : []), cli('ds4-diff', 'tokenize', '-m', model, '-p', HELLO)]);
    record('help', [{ label: 'node', argv: [process.execPath, '-e', '0'] }, cli('ds4-diff', '--help')]);
    record('run_hello', [cli('ds4-diff', 'run', '-m', model, '-p', HELLO, '--layer', '0', '--no-baseline', '--force', '--out', outDir())]);
    // prefill: a prompt's tokens through layer 0 (+ the head on the last), as a multiple of one token
    const prompt = (n: number) => Array.from({ length: n }, (_, i) => (i === n - 1 ? TOKEN : 1000 + 37 * i)).join(',');
    const lengths = o.long ? [1, 12, 64, 256] : [1, 12, 64];
    record('prefill', lengths.map((n) => cli(`${n}_tokens`, 'reference', '-m', model, '--tokens', prompt(n), '--layer', '0')));
    for (const n of lengths.slice(1)) figures[`prefill.${n}_vs_1_token`] = (figures[`prefill.${n}_tokens.wall_s`] as number) / (figures['prefill.1_tokens.wall_s'] as number);
    // the simulator's own pass, inside one process (bench/device.ts; this checkout's simulator)
    if (checkout === ROOT) {
      process.stderr.write('bench: device pass\n');
      const dev = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'bench', 'device.ts'), model], { encoding: 'utf8', cwd: ROOT });
      if (dev.status !== 0) throw new Error(`bench/device.ts failed: ${dev.stderr.trim().split('\n').pop()}`);
      Object.assign(figures, JSON.parse(dev.stdout) as Figures);
      if (ds4) figures['device.fresh_pass_vs_ds4'] = (figures['device.fresh_pass_s'] as number) / (figures['reference_1_token.ds4.c.wall_s'] as number);
    }
    figures['machine.load_1min_after'] = loadavg()[0];
  } finally {
    runs.done();
  }
  return figures;
}

/** The top token of each side's one-token run (ds4 prints its top logits; ds4-diff's reference its top-5). */
function topToken(label: string, stdout: string): string | undefined {
  const m = label.startsWith('ds4.c') ? /top logits[^\n]*\n\s*(\d+)/.exec(stdout) : /top-5 next tokens:\n\s*(\d+)/.exec(stdout);
  return m?.[1];
}
