// The stage registry is the spine: every ds4 dump/test name must land on a canonical stage.
import { describe, expect, it } from 'vitest';
import { STAGES, resolveStage, stageInLayer } from '../reference/registry.ts';

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
        if (names.includes(a) && a !== s.name) throw new Error(`alias ${a} of ${s.name} is another stage's canonical name`);
        const prev = owner.get(a);
        if (prev && prev !== s.name) throw new Error(`alias ${a} names both ${prev} and ${s.name}`);
        owner.set(a, s.name);
      }
      for (const i of s.inputs) expect(resolveStage(i.replace(/^prev:/, '')), `${s.name} input ${i}`).toBeDefined();
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
