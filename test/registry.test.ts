// The stage registry is the spine: every ds4 dump/test name must land on a canonical stage, and the
// inputs it declares are exactly what the reference reads.
import { describe, expect, it } from 'vitest';
import { configFromGguf } from '../model/config.ts';
import { defaultModelPath } from '../model/default-model.ts';
import { openGguf } from '../model/gguf.ts';
import { emittedPositions, parseInput, resolveStage, STAGES, stageAt, stageInLayer, stageInputs, stageKey, windowPositions, type InputRef, type StageDef, type StageId } from '../model/stages.ts';
import { evaluate, type Graph, type Values } from '../reference/interpreter.ts';
import { ModelWeights } from '../reference/weights.ts';

// ds4-stage-catalog.md §8: the Metal/CUDA graph-dump names (decode order, then head, then prefill extras
// that we capture), and the fields of the upstream and Ascend `--metal-graph-test` lines.
const GRAPH_DECODE = 'hc_attn_pre_mixes hc_attn_pre_weights hc_attn_pre_post_weights hc_attn_pre_comb hc_attn_pre attn_norm q_lora KVraw q_lora_norm KVnorm Qraw Qnorm Qcur KVrope KVcur KVcompress kqv_out kqv_back attn_low attn_out hc_attn_post hc_ffn_pre_mixes hc_ffn_pre_weights hc_ffn_pre_post_weights hc_ffn_pre_comb hc_ffn_pre ffn_norm ffn_moe_logits ffn_moe_probs ffn_moe_topk ffn_moe_weights_scaled ffn_moe_gate_clamped ffn_moe_up_clamped ffn_moe_weighted_swiglu ffn_moe_down ffn_moe_out ffn_shexp ffn_out hc_ffn_post result_hc_pre result_hc_weights result_hc result_norm result_output';
const GRAPH_PREFILL = 'raw_cache attn_comp_kv_raw attn_comp_score_raw indexer_comp_kv_raw indexer_comp_score_raw indexer_KVcompress indexer_scores indexer_topk';
const TEST_LINE = 'embed_hc hc_pre attn_norm q_rope kv_rope raw_cache attn_out after_attn_hc ffn_cur ffn_norm shared router_w routed ffn_out after_ffn_hc logits';
const ASCEND_LINE = 'embed_hc hc_pre hc_post_w hc_comb attn_norm q_lora q_lora_norm Qraw Qnorm q_rope KVraw KVnorm kv_rope raw_cache attn_out after_attn_hc ffn_cur ffn_norm shared router_w routed ffn_out after_ffn_hc logits';

describe('stage registry', () => {
  it('resolves every ds4 graph-dump, graph-test and Ascend name', () => {
    for (const name of [GRAPH_DECODE, GRAPH_PREFILL, TEST_LINE, ASCEND_LINE].join(' ').split(' ')) {
      expect(resolveStage(name), name).toBeDefined();
    }
    // spot checks of meaning, from the catalog
    expect(resolveStage('hc_post_w')!.name).toBe('hc_attn_post_w');
    expect(resolveStage('Qcur')!.name).toBe('q_rope');
    expect(resolveStage('kqv_out')!.name).toBe('attn_heads');
    expect(resolveStage('ffn_moe_topk')!.dtype).toBe('i32');
    expect(resolveStage('result_output')!.name).toBe('logits');
    expect(resolveStage('routed')!.name).toBe('moe_out');
  });

  it('has unique names and aliases, and inputs that are stages', () => {
    const names = STAGES.map((s) => s.name);
    expect(new Set(names).size).toBe(names.length);
    const owner = new Map<string, string>();
    for (const s of STAGES) {
      for (const a of Object.values(s.aliases).flat() as string[]) {
        if ((names as string[]).includes(a) && a !== s.name) throw new Error(`alias ${a} of ${s.name} is another stage's canonical name`);
        const prev = owner.get(a);
        if (prev && prev !== s.name) throw new Error(`alias ${a} names both ${prev} and ${s.name}`);
        owner.set(a, s.name);
      }
      for (const i of s.inputs) expect(() => parseInput(i), `${s.name} input ${i}`).not.toThrow();
    }
  });

  it('orders stages as the graph runs and scopes layer kinds', () => {
    const order = (n: string) => resolveStage(n)!.order;
    expect(order('attn_cur')).toBeLessThan(order('q_rope'));
    expect(order('q_rope')).toBeLessThan(order('attn_heads'));
    expect(order('after_attn_hc')).toBeLessThan(order('ffn_cur'));
    expect(order('moe_out')).toBeLessThan(order('after_ffn_hc'));
    expect(stageInLayer(resolveStage('index_topk')!, 'ratio128')).toBe(false);
    expect(stageInLayer(resolveStage('attn_comp_kv')!, 'ratio128')).toBe(true);
    expect(stageInLayer(resolveStage('attn_comp_kv')!, 'raw')).toBe(false);
  });
});

describe('declared inputs are load-bearing', async () => {
  // the bundled tiny model (raw, raw, ratio 4, ratio 128, ratio 4, ratio 128; window 8; top-k 2), 13 tokens:
  // the window slides, ratio-4 layers emit at 3, 7, 11 and the indexer selects at 11 and 12
  const model = await openGguf(await defaultModelPath());
  const cfg = configFromGguf(model);
  const tokens = [1, 5, 9, 12, 40, 7, 3, 100, 200, 11, 13, 17, 19];
  const last = cfg.nLayer - 1;
  const store = new Map<string, Values>();
  const g: Graph = { cfg, weights: new ModelWeights(model, cfg), lastLayer: last, token: (q) => tokens[q] };
  /** (stage, layer, pos) of a read, or 'token' → which declared input of `s` at (layer, pos) covers it */
  const covers = (ref: InputRef, s: StageDef, layer: number, pos: number, read: string): boolean => {
    if (ref.kind === 'token') return read === `token/${pos}`;
    if (ref.kind === 'hc_in') {
      return read === (s.scope === 'head' ? stageKey('after_ffn_hc', last, pos) : layer === 0 ? stageKey('embed_hc', 0, pos) : stageKey('after_ffn_hc', layer - 1, pos));
    }
    const at = ref.kind === 'stage' ? [pos] : ref.kind === 'window' ? windowPositions(cfg, ref.stage, layer, pos) : emittedPositions(cfg, layer, pos);
    return at.some((q) => read === stageKey(ref.stage, layer, q));
  };
  const used = new Map<string, Set<number>>(); // stage -> indices of its declared inputs some evaluation read
  const stray: string[] = [];
  const evalAt = (s: StageDef, layer: number, pos: number) => {
    if (!stageAt(cfg, s, layer, pos)) return;
    const reads: string[] = [];
    const gg: Graph = { ...g, token: (q) => (reads.push(`token/${q}`), tokens[q]) };
    const v = evaluate(gg, s.name, layer, pos, 'ds4', (st, l, q) => {
      reads.push(stageKey(st, l, q));
      return store.get(stageKey(st, l, q))!;
    });
    store.set(stageKey(s.name, layer, pos), v);
    const refs = stageInputs(s.name);
    const u = used.get(s.name) ?? new Set<number>();
    used.set(s.name, u);
    for (const r of reads) {
      const i = refs.findIndex((ref) => covers(ref, s, layer, pos, r));
      if (i < 0) stray.push(`${s.name} layer ${layer} pos ${pos} read ${r}`);
      else u.add(i);
    }
  };
  const scope = (sc: StageDef['scope']) => STAGES.filter((s) => s.scope === sc);
  for (let q = 0; q < tokens.length; q++) for (const s of scope('embed')) evalAt(s, 0, q);
  for (let il = 0; il <= last; il++) for (const s of scope('layer')) for (let q = 0; q < tokens.length; q++) evalAt(s, il, q);
  for (const s of scope('head')) evalAt(s, cfg.nLayer, tokens.length - 1);

  it('every stage reads only the inputs it declares', () => {
    expect(stray).toEqual([]);
  });

  it('every declared input is read by some evaluation of its stage', () => {
    const unread = STAGES.flatMap((s) => s.inputs.filter((_, i) => !used.get(s.name)?.has(i)).map((i) => `${s.name}: ${i}`));
    expect(unread).toEqual([]);
    expect(used.size).toBe(STAGES.length);
  });

  it('types the stage ids', () => {
    const id: StageId = 'q_rope';
    expect(resolveStage(id)!.name).toBe(id);
  });
});
