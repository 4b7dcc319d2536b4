// One error type for every "bad input" the CLI reports: a single line naming the thing, and an exit code.
// Exit codes (shared by every command, see README): 1 tolerance regression, 2 host-fallback violation,
// 3 bad input or usage, 125 cannot evaluate (also: the environment failed us — disk full, I/O error),
// 130 interrupted by SIGINT, 143 terminated by SIGTERM (128 + the signal number, as a shell reports it).
export const EXIT = { ok: 0, regression: 1, hostFallback: 2, badInput: 3, cannotEvaluate: 125, interrupted: 130, terminated: 143 } as const;

export class Ds4DiffError extends Error {
  constructor(message: string, readonly exitCode: number = EXIT.badInput) {
    // one line whatever a file put into it: a stage name, a metadata value or a file name read from
    // an input may hold newlines or control bytes; they are shown escaped
    super(oneLine(message));
    this.name = 'Ds4DiffError';
  }
}

/** `s` with control characters escaped (\n, \r, \t, \xNN), so that it prints as one line. */
export function oneLine(s: string): string {
  return s.replace(/[\x00-\x1f\x7f]/g, (c) => (c === '\n' ? '\\n' : c === '\r' ? '\\r' : c === '\t' ? '\\t' : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`));
}

/** Bad input: a file or value that is not what it claims to be (exit 3). */
export function badInput(message: string): Ds4DiffError {
  return new Ds4DiffError(message, EXIT.badInput);
}

// errno codes that say the machine, not the input, failed: no verdict can be reached (exit 125)
const ENVIRONMENT_ERRNO: Record<string, string> = {
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  EIO: 'I/O error',
  EROFS: 'read-only file system',
  EMFILE: 'too many open files',
  ENFILE: 'too many open files in the system',
  ENOMEM: 'out of memory',
  EFBIG: 'file too large for the file system',
};

// errno codes a path the user gave can cause (exit 3)
const PATH_ERRNO: Record<string, string> = {
  ENOENT: 'no such file or directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EISDIR: 'is a directory',
  ENOTDIR: 'a path component is not a directory',
  ENAMETOOLONG: 'name too long',
  ELOOP: 'too many symbolic links',
  EEXIST: 'already exists',
  ENXIO: 'no reader or device behind it',
};

/**
 * A failed file operation as one line naming the file: the environment's fault (disk full, I/O
 * error: exit 125) or the path's (missing, not permitted: exit 3). Anything already a Ds4DiffError
 * passes through; anything that is not an errno error is returned as it is (a bug, not an input).
 */
export function fileError(file: string, doing: string, err: unknown): Error {
  if (err instanceof Ds4DiffError) return err;
  const code = (err as NodeJS.ErrnoException)?.code;
  if (typeof code !== 'string') return err as Error;
  if (code in ENVIRONMENT_ERRNO) return new Ds4DiffError(`${file}: cannot ${doing}: ${ENVIRONMENT_ERRNO[code]} (${code})`, EXIT.cannotEvaluate);
  return new Ds4DiffError(`${file}: cannot ${doing}: ${PATH_ERRNO[code] ?? (err as Error).message.split('\n')[0]} (${code})`, EXIT.badInput);
}

/** Whether an errno error is the environment's (exit 125) rather than the path's. */
export function isEnvironmentErrno(code: string | undefined): boolean {
  return code !== undefined && code in ENVIRONMENT_ERRNO;
}
