// The no-host-fallback gate (ascend/gate.ts, catalog §9) and the backend selector (ascend/backend.ts).
import { describe, expect, it } from 'vitest';

import { openBackend } from '../ascend/backend.ts';
import { DeviceGate, envForcesNoHostFallback, type HostFallback } from '../ascend/gate.ts';
import { Ds4DiffError } from '../model/errors.ts';

const site = { layer: 3, pos: 1, stage: 'moe_out' };
function countingHost(toHost: number, toDevice: number): HostFallback & { ran: number } {
  const h = { ran: 0, readInputs: () => toHost, computeAndWrite: () => { h.ran++; return toDevice; } };
  return h;
}

describe('no-host-fallback gate', () => {
  it('reads DS4_ASCEND_NO_HOST_FALLBACK like ds4_ascend.c: set, non-empty and not "0"', () => {
    expect(envForcesNoHostFallback({})).toBe(false);
    expect(envForcesNoHostFallback({ DS4_ASCEND_NO_HOST_FALLBACK: '' })).toBe(false);
    expect(envForcesNoHostFallback({ DS4_ASCEND_NO_HOST_FALLBACK: '0' })).toBe(false);
    expect(envForcesNoHostFallback({ DS4_ASCEND_NO_HOST_FALLBACK: '1' })).toBe(true);
    expect(envForcesNoHostFallback({ DS4_ASCEND_NO_HOST_FALLBACK: 'yes' })).toBe(true);
  });

  it('runs the device path when every kernel is there, and records nothing', () => {
    const g = new DeviceGate(new Set(['moe_sum_experts']), false, {});
    let ran = 0;
    const host = countingHost(8, 8);
    g.dispatch('routed_moe_iq2_q2', ['moe_sum_experts'], site, () => ran++, host);
    expect(ran).toBe(1);
    expect(host.ran).toBe(0);
    expect(g.ledger()).toEqual([]);
  });

  it('a missing kernel stops the run: exit 2, `host fallback disabled: <primitive>` with layer, pos, stage', () => {
    const g = new DeviceGate(new Set(['swiglu']), false, {});
    const host = countingHost(8, 8);
    let err: unknown;
    try {
      g.dispatch('routed_moe_iq2_q2', ['moe_gate_up_mid_iq2_q8', 'swiglu'], site, () => { throw new Error('must not run'); }, host);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(Ds4DiffError);
    expect((err as Ds4DiffError).exitCode).toBe(2);
    expect((err as Error).message).toMatch(/^host fallback disabled: routed_moe_iq2_q2 \(layer 3, pos 1, stage moe_out\); no device kernel moe_gate_up_mid_iq2_q8$/);
    expect(host.ran).toBe(0);
  });

  it('with host fallback allowed: computes on the host and the ledger sums calls and bytes per primitive', () => {
    const g = new DeviceGate(new Set(), true, {});
    const host = countingHost(4096 * 4, 2048 * 4);
    g.dispatch('swiglu', ['swiglu'], site, () => { throw new Error('must not run'); }, host);
    g.dispatch('swiglu', ['swiglu'], { ...site, layer: 4 }, () => { throw new Error('must not run'); }, host);
    expect(host.ran).toBe(2);
    const [e] = g.ledger();
    expect(e).toMatchObject({ primitive: 'swiglu', calls: 2, bytesToHost: 2 * 16384, bytesToDevice: 2 * 8192, layer: 3, pos: 1, stage: 'moe_out' });
  });

  it('the environment forces the gate on even when fallback is allowed', () => {
    const g = new DeviceGate(new Set(), true, { DS4_ASCEND_NO_HOST_FALLBACK: '1' });
    expect(g.allowHostFallback).toBe(false);
    expect(() => g.dispatch('swiglu', ['swiglu'], site, () => undefined, countingHost(1, 1))).toThrow(/host fallback disabled: swiglu/);
  });
});

describe('backend selection', () => {
  it('--backend ascend says it needs the CANN runtime (exit 3), no stub', () => {
    expect(() => openBackend('ascend')).toThrow(/needs the Huawei CANN runtime .* not available here/);
    try { openBackend('ascend'); } catch (e) { expect((e as Ds4DiffError).exitCode).toBe(3); }
  });
  it('a missing addon is "cannot evaluate" (125) with the loader\'s reason', () => {
    try {
      openBackend('sim', '/nonexistent/ds4_sim.node');
      expect.unreachable();
    } catch (e) {
      expect((e as Ds4DiffError).exitCode).toBe(125);
      expect((e as Error).message).toMatch(/not found at \/nonexistent\/ds4_sim.node/);
    }
  });
  it('an unknown backend name is bad input', () => {
    expect(() => openBackend('cuda')).toThrow(/unknown backend 'cuda'/);
  });
});

// The gate inside a real device run (ascend/orchestrator.ts) on the tiny fixture.
import { defaultAddonPath, loadNative } from '../ascend/native.ts';
const addonPath = process.env.DS4_SIM_ADDON ?? defaultAddonPath;
const load = loadNative(addonPath);
const ready = load.ok && load.dev.kernels().some((k) => k.name === 'swiglu');

describe.skipIf(!ready)('gate in runDevice', async () => {
  const { defaultModelPath } = await import('../model/default-model.ts');
  const { openGguf } = await import('../model/gguf.ts');
  const { configFromGguf } = await import('../model/config.ts');
  const { runDevice } = await import('../ascend/orchestrator.ts');
  const model = await openGguf(await defaultModelPath());
  const cfg = configFromGguf(model);
  const tokens = [3, 4];

  it('--disable-kernel swiglu stops the run at the first use: exit 2, primitive, layer, pos, stage', async () => {
    const err = await runDevice({ model, cfg, tokens, lastLayer: 0, addonPath, disabledKernels: ['swiglu'] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Ds4DiffError);
    expect((err as Ds4DiffError).exitCode).toBe(2);
    expect((err as Error).message).toMatch(/^host fallback disabled: swiglu \(layer 0, pos 0, stage shared_mid\)/);
  });

  it('with host fallback allowed the run completes and the ledger counts calls and bytes', async () => {
    const r = await runDevice({ model, cfg, tokens, lastLayer: 1, addonPath, disabledKernels: ['swiglu'], allowHostFallback: true });
    const F = cfg.nFfExp;
    // one shared-expert SwiGLU per token per layer: gate and up read back, mid written
    expect(r.ledger).toEqual([{ primitive: 'swiglu', calls: 4, bytesToHost: 4 * 2 * F * 4, bytesToDevice: 4 * F * 4, reason: 'no device kernel (host fallback allowed)', layer: 0, pos: 0, stage: 'shared_mid' }]);
    expect(Array.from(r.logits).every(Number.isFinite)).toBe(true);
  });

  it('the indexer (unimplemented in ds4-ascend) disabled: indexer_score_one stops the run at its first use', async () => {
    const toks = [1, 5, 9, 12, 40, 41, 7, 8, 100, 200, 300, 17]; // the 3rd ratio-4 window closes at pos 11
    const il = cfg.compressRatios.indexOf(4);
    await expect(runDevice({ model, cfg, tokens: toks, lastLayer: il, addonPath, disabledKernels: ['indexer_scores'] }))
      .rejects.toThrow(new RegExp(`^host fallback disabled: indexer_score_one \\(layer ${il}, pos 11, stage index_scores\\)`));
  });

  it('an unknown --disable-kernel name is bad input', async () => {
    await expect(runDevice({ model, cfg, tokens, lastLayer: 0, addonPath, disabledKernels: ['no_such_kernel'] })).rejects.toThrow(/--disable-kernel no_such_kernel: no such kernel/);
  });
});
