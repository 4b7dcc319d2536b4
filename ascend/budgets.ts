// What the device math in use may add to a stage's own error (diff/judge.ts DeviceBound): the declared
// budgets (max NMSE per kernel math, kernels/*.cpp `max_nmse`) of the kernels that produce the stage,
// as relative RMS errors summed along the chain (relative errors of a chain add to first order).
// The declarations are also kept in kernels/budgets.json, so a run can be judged where the simulator
// addon is not built (an engine on an Atlas host); a test keeps that file equal to the addon's
// declarations (`ds4-diff kernels --budgets > kernels/budgets.json` rewrites it).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DeviceBound } from '../diff/judge.ts';
import { badInput } from '../model/errors.ts';
import type { KernelCatalog } from './kernels.ts';
import { budgetRelAt, type KernelBudget } from './native.ts';

export type KernelMath = 'ascend' | 'exact';

export interface BudgetTable {
  /** per kernel, its max NMSE against its exact host twin per kernel math (and its growth per position) */
  kernels: Record<string, KernelBudget>;
  /** per registry stage, every kernel that declares it produces it (the decode and the prefill pass's) */
  stages: Record<string, string[]>;
}

export const BUDGETS_FILE = path.resolve(fileURLToPath(import.meta.url), '..', '..', 'kernels', 'budgets.json');

/** The table of a catalog (what `ds4-diff kernels --budgets` prints). */
export function budgetTable(catalog: KernelCatalog): BudgetTable {
  const kernels: BudgetTable['kernels'] = {};
  const stages: BudgetTable['stages'] = {};
  for (const k of [...catalog.kernels.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    kernels[k.name] = { ascend: k.budget.ascend, exact: k.budget.exact, ...(k.budget.perPos ? { perPos: k.budget.perPos } : {}) };
    for (const s of k.stages) (stages[s] ??= []).push(k.name);
  }
  return { kernels, stages };
}

let shipped: BudgetTable | undefined;

function shippedTable(): BudgetTable {
  if (!shipped) {
    try {
      shipped = JSON.parse(fs.readFileSync(BUDGETS_FILE, 'utf8')) as BudgetTable;
    } catch (e) {
      throw badInput(`${BUDGETS_FILE}: the kernels' declared budgets cannot be read (${(e as Error).message.split('\n')[0]}); reinstall ds4-diff`);
    }
  }
  return shipped;
}

/** The kernel math a run's own errors are judged under: the run's, else its backend's (the ds4-ascend fork's
 *  kernels carry the Ascend approximations; any other engine is held to exact f32 arithmetic). */
export function kernelMathOf(m: { kernelMath?: string; backend: string }): KernelMath {
  return m.kernelMath === 'ascend' || m.kernelMath === 'exact' ? m.kernelMath : m.backend === 'ascend' ? 'ascend' : 'exact';
}

/** The device bounds of a run (its manifest): its kernel math, and the kernels its device passes launched when it recorded them. */
export function runDeviceBounds(m: { kernelMath?: string; backend: string; producers?: Record<string, string[]> }): (stage: string, pos: number) => DeviceBound {
  return deviceBounds(kernelMathOf(m), m.producers);
}

/**
 * The device bound of every stage, at a row's position, under one kernel math. `producers` (stage → the
 * kernels a device pass launched for it, recorded by the run) narrows the chain to what really ran; without
 * it (an engine, whose kernels are its own), every kernel that declares the stage counts. Under the Ascend
 * math the bound also carries the exact-math budgets, which the judge uses with a row's approximation twin
 * (diff/judge.ts ownBudget). A budget that grows with the position (RoPE's) is taken at the row's.
 */
export function deviceBounds(math: KernelMath, producers?: Record<string, string[]>, table: BudgetTable = shippedTable()): (stage: string, pos: number) => DeviceBound {
  const sum = (chain: string[], m: KernelMath, pos: number) => {
    let rel = 0;
    const parts: string[] = [];
    for (const k of chain) {
      const b = table.kernels[k];
      if (b?.[m] === undefined) continue;
      const r = budgetRelAt(b, m, pos);
      rel += r;
      parts.push(`${k} ${r.toExponential(1)}${b.perPos ? ` at pos ${pos}` : ''}`);
    }
    return { rel, from: `${m} device math: ${parts.join(' + ') || 'no kernel declares it'}` };
  };
  return (stage, pos) => {
    const chain = producers?.[stage] ?? table.stages[stage] ?? [];
    return math === 'ascend' ? { ...sum(chain, 'ascend', pos), exact: sum(chain, 'exact', pos) } : sum(chain, 'exact', pos);
  };
}
