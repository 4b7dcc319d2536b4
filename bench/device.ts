// The device simulator's own figures, measured inside one process on the real-dims file: one token through
// layer 0 + the output head on a fresh device (its weights are the model file's mapping: nothing to
// upload), the same on a device session whose weights are in place (run's second pass, bisect's later
// ones), and what the kernels read per second of kernel time against the machine's memory bandwidth
// (measured natively, all cores). Run as a child: `tsx bench/device.ts MODEL` prints the figures as JSON.
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { openDeviceSession, runDevice } from '../ascend/orchestrator.ts';
import { configFromGguf } from '../model/config.ts';
import { openGguf } from '../model/gguf.ts';
import { addon, type Figures } from './measure.ts';

const TOKEN = 128816;

async function deviceFigures(path: string): Promise<Figures> {
  const model = await openGguf(path);
  const cfg = configFromGguf(model);
  const pass = { model, cfg, tokens: [TOKEN], lastLayer: 0 };
  const t0 = performance.now();
  const fresh = await runDevice(pass);
  const freshS = (performance.now() - t0) / 1000;
  const session = openDeviceSession(model);
  await runDevice({ ...pass, session });
  const t1 = performance.now();
  const warm = await runDevice({ ...pass, session });
  const sessionS = (performance.now() - t1) / 1000;
  session.close();
  const bytes = Object.values(warm.stats).reduce((a, s) => a + s.bytesIn, 0);
  const kernelS = Object.values(warm.stats).reduce((a, s) => a + s.ns, 0) / 1e9;
  const bandwidth = addon().readBandwidth(256 << 20, availableParallelism(), 5);
  return {
    'device.fresh_pass_s': freshS,
    'device.session_pass_s': sessionS,
    'device.kernel_s': kernelS,
    'device.kernel_bytes_read': bytes,
    'device.kernel_bytes_per_s_vs_memory_bandwidth': bytes / kernelS / bandwidth,
    'device.readback_bytes': fresh.readbackBytes,
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  process.stdout.write(JSON.stringify(await deviceFigures(process.argv[2])) + '\n');
}
