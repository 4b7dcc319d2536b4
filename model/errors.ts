// One error type for every "bad input" the CLI reports: a single line naming the thing, and an exit code.
// Exit codes (shared by every command, see README): 1 tolerance regression, 2 host-fallback violation,
// 3 bad input or usage, 125 cannot evaluate.
export const EXIT = { ok: 0, regression: 1, hostFallback: 2, badInput: 3, cannotEvaluate: 125 } as const;

export class Ds4DiffError extends Error {
  constructor(message: string, readonly exitCode: number = EXIT.badInput) {
    super(message);
    this.name = 'Ds4DiffError';
  }
}

/** Bad input: a file or value that is not what it claims to be (exit 3). */
export function badInput(message: string): Ds4DiffError {
  return new Ds4DiffError(message, EXIT.badInput);
}
