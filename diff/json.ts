// JSON with non-finite numbers: metrics can be ±Infinity (SQNR of identical tensors, NMSE against a
// zero reference) or NaN, which plain JSON cannot hold. They are written as the strings "Infinity",
// "-Infinity" and "NaN" and read back as numbers.
const NON_FINITE: Record<string, number> = { Infinity: Infinity, '-Infinity': -Infinity, NaN: NaN };

export function stringifyJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v), 2) + '\n';
}

export function parseJson<T>(text: string): T {
  return JSON.parse(text, (_k, v) => (typeof v === 'string' && v in NON_FINITE ? NON_FINITE[v] : v)) as T;
}
