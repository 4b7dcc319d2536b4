// `ds4-diff inspect MODEL`: config, per-layer kinds, tensor type histogram, validation (exit 3 when invalid);
// `--tensor NAME [--rows A:B] --dequant --out FILE.f32`: one tensor's rows as raw little-endian f32.
import type { Command } from 'commander';
import fs from 'node:fs';
import { writeFileAtomic } from '../../model/atomic-write.ts';
import { openGguf, readRows, tensorInfo, tensorRows, type GgufModel } from '../../model/gguf.ts';
import { validateModel, type ValidationResult } from '../../model/validate.ts';
import { isHashLayer, layerKind, type Ds4Config } from '../../model/config.ts';
import { typeName } from '../../model/quant/types.ts';
import { dequantizeRow } from '../../model/quant/index.ts';
import { Ds4DiffError, EXIT, badInput } from '../../model/errors.ts';

interface InspectOptions {
  json?: boolean;
  strictDs4Flash?: boolean;
  tensor?: string;
  rows?: string;
  dequant?: boolean;
  out?: string;
}

interface LayerRow {
  layer: number;
  kind: string;
  routing: string;
  experts: string;
}

function layerTable(m: GgufModel, cfg: Ds4Config): LayerRow[] {
  return Array.from({ length: cfg.nLayer }, (_, il) => {
    const k = layerKind(cfg, il);
    const typeOf = (n: string) => { const t = m.tensors.get(`blk.${il}.${n}`); return t ? typeName(t.type) : '-'; };
    return {
      layer: il,
      kind: k === 'raw' ? 'raw (sliding window)' : k === 'ratio4' ? 'ratio 4 + indexer' : 'ratio 128',
      routing: isHashLayer(cfg, il) ? 'hash (tid2eid)' : m.tensors.has(`blk.${il}.exp_probs_b.bias`) ? 'top-k + bias' : 'top-k',
      experts: `${typeOf('ffn_gate_exps.weight')}/${typeOf('ffn_up_exps.weight')}/${typeOf('ffn_down_exps.weight')}`,
    };
  });
}

function typeHistogram(m: GgufModel): Array<{ type: string; tensors: number; bytes: number }> {
  const h = new Map<string, { type: string; tensors: number; bytes: number }>();
  for (const t of m.tensors.values()) {
    const name = typeName(t.type);
    const e = h.get(name) ?? { type: name, tensors: 0, bytes: 0 };
    e.tensors++;
    e.bytes += t.nbytes;
    h.set(name, e);
  }
  return [...h.values()].sort((a, b) => b.bytes - a.bytes);
}

const gib = (n: number) => `${(n / 2 ** 30).toFixed(3)} GiB`;

function printSummary(m: GgufModel, v: ValidationResult, strict: boolean) {
  const out: string[] = [];
  const totalBytes = [...m.tensors.values()].reduce((a, t) => a + t.nbytes, 0);
  out.push(`model        ${m.path}`);
  out.push(`name         ${String(m.metadata['general.name'] ?? '-')} (${String(m.metadata['general.architecture'] ?? '-')})`);
  out.push(`file         ${m.fileSize} bytes (${gib(m.fileSize)}), ${m.tensors.size} tensors, ${totalBytes} tensor bytes`);
  out.push(`fingerprint  ${m.fingerprint}`);
  if (v.config) {
    out.push('', 'config');
    for (const [k, val] of Object.entries(v.config)) {
      if (k === 'compressRatios' || k === 'swigluClamp') continue;
      // f32-stored values (eps) print at f32 precision rather than as their double expansion
      const shown = typeof val === 'number' && !Number.isInteger(val) ? String(Number(val.toPrecision(7))) : String(val);
      out.push(`  ${k.padEnd(22)} ${shown}`);
    }
    out.push('', 'layers');
    out.push(`  ${'layer'.padEnd(6)}${'attention'.padEnd(22)}${'routing'.padEnd(16)}experts gate/up/down`);
    for (const r of layerTable(m, v.config)) out.push(`  ${String(r.layer).padEnd(6)}${r.kind.padEnd(22)}${r.routing.padEnd(16)}${r.experts}`);
  }
  out.push('', 'tensor types');
  for (const h of typeHistogram(m)) out.push(`  ${h.type.padEnd(8)} ${String(h.tensors).padStart(5)} tensors  ${String(h.bytes).padStart(14)} bytes  ${gib(h.bytes)}`);
  out.push('', `validation${strict ? ' (strict DS4 Flash)' : ''}: ${v.violations.length ? `INVALID, ${v.violations.length} violation(s)` : 'OK'}`);
  for (const x of v.violations) out.push(`  ${x}`);
  if (v.config && !v.violations.length) out.push(`runnable by ds4-diff: ${v.unsupported.length ? `NO, ${v.unsupported.length} tensor(s)` : 'yes'}`);
  for (const x of v.unsupported.slice(0, 5)) out.push(`  ${x}`);
  if (v.unsupported.length > 5) out.push(`  ... ${v.unsupported.length - 5} more`);
  if (v.unused.length) out.push(`  ${v.unused.length} tensor(s) not used by DS4: ${v.unused.slice(0, 5).join(', ')}${v.unused.length > 5 ? ', ...' : ''}`);
  process.stdout.write(out.join('\n') + '\n');
}

function summaryJson(m: GgufModel, v: ValidationResult, strict: boolean) {
  return {
    path: m.path,
    name: m.metadata['general.name'] ?? null,
    fileSize: m.fileSize,
    fingerprint: m.fingerprint,
    tensorCount: m.tensors.size,
    tensorBytes: [...m.tensors.values()].reduce((a, t) => a + t.nbytes, 0),
    config: v.config ?? null,
    layers: v.config ? layerTable(m, v.config) : [],
    types: typeHistogram(m),
    valid: v.violations.length === 0,
    strictDs4Flash: strict,
    violations: v.violations,
    runnable: v.violations.length === 0 && v.unsupported.length === 0,
    unsupported: v.unsupported,
    unused: v.unused,
  };
}

function parseRows(s: string | undefined, rows: number, name: string): [number, number] {
  if (s === undefined) return [0, rows];
  const m = /^(\d*):(\d*)$/.exec(s);
  if (!m) throw badInput(`--rows ${s}: expected A:B (rows A..B-1; either side may be empty)`);
  const a = m[1] === '' ? 0 : Number(m[1]);
  const b = m[2] === '' ? rows : Number(m[2]);
  if (a >= b) throw badInput(`--rows ${s}: selects no row (rows A..B-1 need A < B)`);
  if (b > rows) throw badInput(`--rows ${s}: outside tensor ${name} (${rows} rows)`);
  return [a, b];
}

/** Dequantized rows [r0, r1) as little-endian f32, written in ~4 MB batches of rows. */
function dumpRows(m: GgufModel, name: string, r0: number, r1: number, outPath: string) {
  const t = tensorInfo(m, name);
  const { rowBytes } = tensorRows(t);
  const batch = Math.max(1, Math.floor((4 << 20) / rowBytes));
  writeFileAtomic(outPath, 'write the rows', (fd) => {
    for (let r = r0; r < r1; r += batch) {
      const e = Math.min(r1, r + batch);
      const bytes = readRows(m, name, r, e);
      for (let i = 0; i < e - r; i++) {
        const f = dequantizeRow(t.type, bytes.subarray(i * rowBytes, (i + 1) * rowBytes), t.dims[0]);
        fs.writeSync(fd, new Uint8Array(f.buffer, f.byteOffset, f.byteLength));
      }
    }
  });
}

function inspectTensor(m: GgufModel, opts: InspectOptions & { tensor: string }) {
  const t = tensorInfo(m, opts.tensor);
  const { rows, rowBytes } = tensorRows(t);
  const [r0, r1] = parseRows(opts.rows, rows, t.name);
  const info = { name: t.name, type: typeName(t.type), dims: t.dims, rows, rowBytes, offset: t.offset, nbytes: t.nbytes };
  if (opts.dequant) {
    if (!opts.out) throw badInput('--dequant needs --out FILE.f32');
    dumpRows(m, t.name, r0, r1, opts.out);
  }
  const wrote = opts.dequant ? { out: opts.out, rows: [r0, r1], values: (r1 - r0) * t.dims[0] } : undefined;
  if (opts.json) {
    process.stdout.write(JSON.stringify({ ...info, ...(wrote ? { dequant: wrote } : {}) }) + '\n');
  } else {
    process.stdout.write(`${t.name}  ${info.type} [${t.dims.join(', ')}]  ${rows} rows × ${rowBytes} bytes  at offset ${t.offset}, ${t.nbytes} bytes\n`);
    if (wrote) process.stdout.write(`wrote rows ${r0}:${r1} (${wrote.values} f32 values, row-major, ggml order) to ${opts.out}\n`);
  }
}

export function register(program: Command): void {
  program
    .command('inspect')
    .description('show a GGUF\'s DS4 config, per-layer kinds, tensor types and validation result (exit 3 when invalid), or dump one tensor')
    .argument('<model>', 'GGUF file')
    .option('--json', 'machine-readable output')
    .option('--strict-ds4-flash', 'also demand the real DeepSeek V4 Flash fixed values (43 layers, 4096, ...)')
    .option('--tensor <name>', 'show one tensor (e.g. blk.0.attn_q_a.weight)')
    .option('--rows <A:B>', 'with --tensor: rows A..B-1 (ggml rows: dims[1], then dims[2], ...)')
    .option('--dequant', 'with --tensor: write the dequantized rows to --out as raw little-endian f32')
    .option('--out <file>', 'with --dequant: output file')
    .addHelpText('after', '\nExamples:\n  ds4-diff inspect t.gguf\n  ds4-diff inspect flash.gguf --strict-ds4-flash --json\n  ds4-diff inspect t.gguf --tensor blk.0.attn_q_a.weight --rows 0:4 --dequant --out qa.f32')
    .action(async (modelPath: string, opts: InspectOptions) => {
      if ((opts.rows || opts.dequant || opts.out) && !opts.tensor) throw badInput('--rows, --dequant and --out need --tensor NAME');
      const m = await openGguf(modelPath);
      try {
        if (opts.tensor) return inspectTensor(m, { ...opts, tensor: opts.tensor });
        const strict = !!opts.strictDs4Flash;
        const v = validateModel(m, { strictDs4Flash: strict });
        if (opts.json) process.stdout.write(JSON.stringify(summaryJson(m, v, strict), null, 2) + '\n');
        else printSummary(m, v, strict);
        if (v.violations.length) throw new Ds4DiffError(`${modelPath}: not a valid DS4 model (${v.violations.length} violation(s), listed above)`, EXIT.badInput);
      } finally {
        m.close();
      }
    });
}
