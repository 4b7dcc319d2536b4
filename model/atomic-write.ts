// Files written whole under a temporary name beside them and renamed into place: a write that fails (disk full,
// a directory in the way) leaves neither a half-written file under the name nor the temporary file, and what was
// there before stays as it was. The failure is one line naming the file (model/errors.ts fileError).
import * as fs from 'node:fs';
import { fileError } from './errors.ts';

/** Writes `file` through `write(fd)` atomically; `doing` names the write in a failure ("write the baseline"). */
export function writeFileAtomic(file: string, doing: string, write: (fd: number) => void): void {
  const tmp = `${file}.tmp-${process.pid}`;
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'w');
    write(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, file);
  } catch (e) {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw fileError(file, doing, e);
  }
}

/** Writes all of `bytes` at `position` of `fd` (a write may take fewer bytes than given). */
export function writeAll(fd: number, bytes: Uint8Array, position: number): void {
  let done = 0;
  while (done < bytes.length) done += fs.writeSync(fd, bytes, done, bytes.length - done, position + done);
}
