// Worker entry for the fuzz pool (test/fuzz.ts): TypeScript runs through tsx's loader, as in cli/ds4-diff.js.
import { register } from 'tsx/esm/api';
import { parentPort, workerData } from 'node:worker_threads';

register();
const { fuzzCase } = await import('./fuzz-case.ts');
parentPort.on('message', async ({ reader, seed, i }) => {
  const result = await fuzzCase(reader, workerData.fixtures, seed, i, workerData.work);
  parentPort.postMessage(result);
});
parentPort.postMessage({ ready: true });
