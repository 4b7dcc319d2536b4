import { it } from 'vitest';
it('dbg', async () => {
  const { SUITE, runCase } = await import('/work/wt14/ascend/kernel-suite.ts');
  const { loadNative } = await import('/work/wt14/ascend/native.ts');
  const { KernelCatalog } = await import('/work/wt14/ascend/kernels.ts');
  const l = loadNative(); if (!l.ok) throw 0;
  const cat = new KernelCatalog(l.addon);
  const c = SUITE.find((x) => x.label.startsWith('softmax worst'))!;
  for (const n_comp of [0, 1, 100, 895]) {
    const cc = { ...c, scalars: { ...c.scalars, n_comp } };
    console.log(n_comp, runCase(l.dev, cat, cc, 'exact').nmse, runCase(l.dev, cat, cc, 'ascend').nmse);
  }
});
