// JSON with non-finite numbers: metrics can be ±Infinity (SQNR of identical tensors, NMSE against a
// zero reference) or NaN, which plain JSON cannot hold. They are written as the strings "Infinity",
// "-Infinity" and "NaN" and read back as numbers.
import * as fs from 'node:fs';
import { badInput, fileError } from '../model/errors.ts';

const NON_FINITE: Record<string, number> = { Infinity: Infinity, '-Infinity': -Infinity, NaN: NaN };

export function stringifyJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v), 2) + '\n';
}

export function parseJson<T>(text: string): T {
  return JSON.parse(text, (_k, v) => (typeof v === 'string' && v in NON_FINITE ? NON_FINITE[v] : v)) as T;
}

export interface ReadJsonOptions {
  /** what the file is, for the error line ("baseline", "policy file", "run manifest") */
  what: string;
  /** refuse a larger file before reading it */
  maxBytes: number;
  /** the error text for a missing file (default "no such file") */
  missing?: string;
}

/**
 * A JSON input file, read only after it proved to be a regular file under the size cap: `/dev/zero`,
 * a FIFO, a directory or a 10 GB file is refused in one line (exit 3) before anything is read or
 * parsed. Non-finite numbers are read back as with `parseJson`.
 */
export function readJsonFile<T>(file: string, o: ReadJsonOptions): T {
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; the fstat below then refuses it
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw badInput(`${file}: ${o.missing ?? 'no such file'}`);
    throw fileError(file, `open the ${o.what}`, e);
  }
  let text: string;
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw badInput(`${file}: not a regular file (${st.isDirectory() ? 'a directory' : st.isFIFO() ? 'a FIFO' : st.isCharacterDevice() ? 'a character device' : 'a special file'}); a ${o.what} is a JSON file`);
    if (st.size > o.maxBytes) throw badInput(`${file}: ${st.size} bytes is too large for a ${o.what} (at most ${o.maxBytes})`);
    const buf = Buffer.alloc(st.size);
    let done = 0;
    while (done < buf.length) {
      const n = fs.readSync(fd, buf, done, buf.length - done, done);
      if (n === 0) break;
      done += n;
    }
    text = buf.subarray(0, done).toString('utf8');
  } catch (e) {
    throw fileError(file, `read the ${o.what}`, e);
  } finally {
    fs.closeSync(fd);
  }
  try {
    return parseJson<T>(text);
  } catch (e) {
    throw badInput(`${file}: not a valid ${o.what} (${(e as Error).message.split('\n')[0]})`);
  }
}
