// What the model-running commands (reference, run) share: model + prompt resolution, the layer
// range, and progress on stderr.
import type { Command } from 'commander';
import { configFromGguf, type Ds4Config } from '../model/config.ts';
import { layersWithoutData, openGguf, type GgufModel } from '../model/gguf.ts';
import { DEFAULT_SYSTEM, renderChat } from '../model/chat.ts';
import { badInput } from '../model/errors.ts';
import { Tokenizer } from '../model/tokenizer.ts';
import { validateModel } from '../model/validate.ts';
import { MANIFEST_FORMAT_VERSION, type RunManifest } from '../diff/manifest.ts';
import { startRowPool } from '../reference/rowpool.ts';

export interface ModelPromptOptions {
  model?: string;
  prompt?: string;
  tokens?: string;
  system?: string;
  think?: boolean;
  nothink?: boolean;
  raw?: boolean;
  layer?: string;
  layers?: string;
}

/** A repeatable option whose values may also be comma-separated (`--stages a,b --stages c`). */
export const collectList = (value: string, prev: string[]): string[] => [...prev, ...value.split(',').map((s) => s.trim()).filter(Boolean)];

/** The options every model-running command takes. */
export function addModelPromptOptions(cmd: Command): Command {
  return cmd
    .option('-m, --model <gguf>', 'DS4 GGUF (default: the bundled tiny synthetic model)')
    .option('-p, --prompt <text>', 'prompt, rendered with the DS4 chat template like `ds4 -p TEXT`')
    .option('--tokens <ids>', 'comma-separated token ids instead of a prompt (e.g. taken from an engine run)')
    .option('--system <text>', 'system prompt ("" omits it)', DEFAULT_SYSTEM)
    .option('--think', 'end the template with <think>')
    .option('--nothink', 'end the template with </think> (the default, as in the seeds\' smoke runs)')
    .option('--raw', 'no chat template')
    .option('--layer <n>', 'run layers 0..N, then the output head on that state (ds4\'s layer-0 graph test)')
    .option('--layers <r>', '"all" (the default) or "0:N": the layers to run');
}

/** The run-directory, gate and report options `run` and `engine` share. */
export function addRunDirOptions(cmd: Command): Command {
  return cmd
    .option('--out <dir>', 'run directory (default: runs/<time>): new or empty, or an old run directory with --force')
    .option('--force', 'replace the run directory --out names if it holds an earlier run (a directory that holds no run is never cleared)')
    .option('--baseline <file>', 'a baseline of this case: tightens the budgets, names known deviations and accepted fallbacks (default: the shipped baseline whose case matches)')
    .option('--no-baseline', 'judge by the arithmetic budgets alone, even when a shipped baseline matches the case')
    .option('--policy <file>', 'your bounds on chosen rows, on top of the judge\'s (JSON rules, see the README)')
    .option('--json', 'print the report as JSON')
    .option('--markdown <file>', 'also write the Markdown report here (always written into the run directory)')
    .option('--junit <file>', 'also write the JUnit XML report here')
    .option('--html <file>', 'also write the HTML report here (always written into the run directory)')
    .option('--csv <file>', 'also write every (stage, layer, pos) row as CSV: both sides\' statistics, the metrics, the worst element')
    .option('--by-layer', 'split the terminal\'s stage table by layer');
}

export interface LoadedRun {
  modelPath: string;
  model: GgufModel;
  cfg: Ds4Config;
  tokens: number[];
  prompt?: string;
  lastLayer: number;
  allLayers: boolean;
}

/** The GGUF at `path` (default: the bundled tiny model), validated as a DS4 model, and its config. */
export async function loadModel(path?: string): Promise<{ modelPath: string; model: GgufModel; cfg: Ds4Config }> {
  const modelPath = path ?? (await (await import('../model/default-model.ts')).defaultModelPath());
  const model = await openGguf(modelPath);
  const { violations, unsupported } = validateModel(model);
  if (violations.length) throw badInput(`${modelPath}: not a valid DS4 model (${violations.length} problems, first: ${violations[0]}); see ds4-diff inspect`);
  if (unsupported.length) throw badInput(`${modelPath}: a valid DS4 model that ds4-diff cannot run (${unsupported.length} tensors, first: ${unsupported[0]}); see ds4-diff inspect`);
  return { modelPath, model, cfg: configFromGguf(model) };
}

/** `--tokens 0,17,5`: every element a token id (of a vocabulary of `nVocab`, when known); an empty element is refused. */
export function parseTokenIds(text: string, nVocab?: number): number[] {
  const parts = text.split(',');
  return parts.map((raw, i) => {
    const s = raw.trim();
    if (!/^\d+$/.test(s)) throw badInput(`--tokens: ${s === '' ? `element ${i + 1} of '${text}' is empty` : `'${s}' is not a token id`} (give comma-separated ids, e.g. 0,17,5)`);
    const t = Number(s);
    if (nVocab !== undefined ? t >= nVocab : t > 2 ** 31 - 1) throw badInput(`--tokens: '${s}' is not a token id of this model (0..${(nVocab ?? 2 ** 31) - 1})`);
    return t;
  });
}

export async function loadModelAndPrompt(opts: ModelPromptOptions): Promise<LoadedRun> {
  if (opts.prompt === undefined && opts.tokens === undefined) throw badInput('needs -p TEXT or --tokens IDS');
  // the tokens would be run and the text recorded as the prompt: a case that says one thing and runs another
  if (opts.prompt !== undefined && opts.tokens !== undefined) throw badInput('-p and --tokens exclude each other (the prompt as text, or as token ids)');
  if (opts.think && opts.nothink) throw badInput('--think and --nothink exclude each other');
  // every command that loads a prompt runs the reference: its product workers load while the model opens
  startRowPool();
  const { modelPath, model, cfg } = await loadModel(opts.model);
  let tokens: number[];
  if (opts.tokens !== undefined) {
    tokens = parseTokenIds(opts.tokens, cfg.nVocab);
  } else {
    const tok = Tokenizer.fromGguf(model);
    tokens = renderChat(tok, opts.prompt!, { system: opts.system, think: opts.think === true, raw: opts.raw }).ids;
  }
  if (tokens.length === 0) throw badInput('the prompt has no tokens');
  const { lastLayer, allLayers } = parseLayerRange(opts, cfg);
  return { modelPath, model, cfg, tokens, prompt: opts.prompt, lastLayer, allLayers };
}

export function parseLayerRange(opts: { layer?: string; layers?: string }, cfg: Ds4Config): { lastLayer: number; allLayers: boolean } {
  if (opts.layer !== undefined && opts.layers !== undefined) throw badInput('--layer and --layers exclude each other');
  let last = cfg.nLayer - 1;
  if (opts.layer !== undefined) {
    if (!/^\d+$/.test(opts.layer)) throw badInput(`--layer: '${opts.layer}' is not a layer number`);
    last = Number(opts.layer);
  } else if (opts.layers !== undefined && opts.layers !== 'all') {
    const m = /^0:(\d+)$/.exec(opts.layers);
    if (!m) throw badInput(`--layers: '${opts.layers}' must be "all" or "0:N" (every run starts at the embedding)`);
    last = Number(m[1]);
  }
  if (last >= cfg.nLayer) throw badInput(`layer ${last} does not exist: the model has ${cfg.nLayer} layers (0..${cfg.nLayer - 1})`);
  return { lastLayer: last, allLayers: last === cfg.nLayer - 1 };
}

/** Progress lines on stderr, only once a run has taken longer than a second (and never in CI logs' way). */
export function progress(label: string): { tick: (msg: string) => void; done: () => void } {
  const t0 = Date.now();
  const tty = process.stderr.isTTY;
  let shown = false;
  let last = 0;
  return {
    tick(msg: string) {
      const now = Date.now();
      // a TTY line is rewritten in place; a log gets at most one line every 2 s
      if (now - t0 < 1000 || (!tty && now - last < 2000)) return;
      shown = true;
      last = now;
      const line = `${label}: ${msg} (${((Date.now() - t0) / 1000).toFixed(1)} s)`;
      process.stderr.write(tty ? `\r\x1b[K${line}` : `${line}\n`);
    },
    done() {
      if (shown && tty) process.stderr.write('\r\x1b[K');
    },
  };
}

/**
 * Each token's text (a partial UTF-8 character shows as U+FFFD), for the reports; none when the model has no
 * vocabulary. Read entry by entry in place: a --tokens run never decodes the vocabulary.
 */
export function tokenPieces(model: GgufModel, ids: number[]): string[] | undefined {
  return model.stringArray('tokenizer.ggml.tokens') && ids.map((id) => Tokenizer.pieceIn(model, id));
}

/** A fresh (incomplete) run manifest for a loaded model and prompt. */
export function newManifest(run: LoadedRun, backend: string, options: Record<string, unknown>, kernelMath?: string): RunManifest {
  return {
    formatVersion: MANIFEST_FORMAT_VERSION,
    complete: false,
    createdAt: new Date().toISOString(),
    model: { path: run.modelPath, fingerprint: run.model.fingerprint },
    prompt: run.prompt,
    promptTokens: run.tokens,
    tokenPieces: tokenPieces(run.model, run.tokens),
    layers: { last: run.lastLayer, all: run.allLayers },
    ...weightlessOf(run),
    backend,
    kernelMath,
    options,
    files: {},
    noHostFallback: true,
    fallbackLedger: [],
  };
}

/** The run's layers whose weights hold no data (a sparse fixture's holes), when there are any. */
function weightlessOf(run: LoadedRun): { weightless?: number[] } {
  const w = layersWithoutData(run.model, run.cfg.nLayer, run.lastLayer);
  return w.length ? { weightless: w } : {};
}
