// The kernels device passes launched for each stage: what a stage's device bound sums over (ascend/budgets.ts
// deviceBounds). `run` records them in its manifest; bisect's probe and calibrate judge by those of their own passes.

export class Producers {
  private readonly at = new Map<string, Set<string>>();
  constructor(table: Record<string, string[]> = {}) {
    for (const [s, ks] of Object.entries(table)) this.at.set(s, new Set(ks));
  }
  note = (stage: string, _layer: number, _pos: number, kernels: readonly string[]): void => {
    const s = this.at.get(stage) ?? new Set<string>();
    for (const k of kernels) s.add(k);
    this.at.set(stage, s);
  };
  table(): Record<string, string[]> {
    return Object.fromEntries([...this.at].map(([s, ks]) => [s, [...ks].sort()]));
  }
}
