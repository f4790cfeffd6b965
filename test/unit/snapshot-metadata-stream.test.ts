// A server-streaming call goes through the one request wrapper like a unary one: the
// caller's deadline reaches the child process the stream waits for, it counts against
// --max-concurrent-rpcs until it ends, and a backend's refusal arrives as the stream's status.
// Real gRPC server and services, real child processes; only the backend is a fake.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import { run } from '../../driver/host/exec.js';
import { codeName } from '../../sidecars/common/csi-client.js';
import { BackendError, type SnapshotBlocks } from '../../driver/backends/backend.js';
import { deriveId } from '../../driver/ids.js';
import { waitFor } from '../lib/wait.js';
import { startServices, type ServiceHarness } from './service-harness.js';

const SNAP = deriveId('snap', 'fake', 'cbt');
const argv = ['sleep', `40.${process.pid % 1000}`];

async function pidsOf(cmd: string[]): Promise<number[]> {
  const out: number[] = [];
  for (const n of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(n)) continue;
    const line = await fs.readFile(`/proc/${n}/cmdline`, 'utf8').catch(() => '');
    if (line === cmd.join('\0') + '\0') out.push(Number(n));
  }
  return out;
}

describe('SnapshotMetadata streams through the request wrapper', () => {
  let h: ServiceHarness;
  beforeAll(async () => {
    h = await startServices({ maxConcurrentRpcs: 1 });
    h.backend.snaps.set(SNAP, { id: SNAP, name: 'cbt', sourceVolumeId: deriveId('vol', 'fake', 'v'), sizeBytes: 1n << 20n, createdAtSeconds: 1n, createdAtNanos: 0, groupSnapshotId: '', parameters: {} });
    const blocks: SnapshotBlocks = {
      allocated: async () => {
        await run(argv[0], argv.slice(1));
        return { capacityBytes: 1n << 20n, ranges: [] };
      },
      delta: async () => {
        throw new BackendError('precondition', 'no changed-block tracking here: take a full backup');
      },
    };
    Object.assign(h.backend, { snapshotBlocks: blocks });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('a stream holds a slot until it ends, and its deadline kills the child it waits for', async () => {
    const first = h.client.SnapshotMetadata.GetMetadataAllocated({ snapshot_id: SNAP }, 3_000).catch((e: unknown) => e);
    const pid = await waitFor('the stream to start its child', async () => (await pidsOf(argv))[0], { everyMs: 20, timeoutMs: 10_000 });
    // The cap is 1 and the stream is still running: the next call is refused at once.
    expect(codeName(await h.client.Controller.ListVolumes({}).catch((e: unknown) => e))).toBe('UNAVAILABLE');
    expect(codeName(await first)).toBe('DEADLINE_EXCEEDED');
    await waitFor('the child to be killed', async () => !(await fs.access(`/proc/${pid}`).then(() => true, () => false)), { everyMs: 20, timeoutMs: 10_000 });
    // The slot is free again once the stream ended.
    await waitFor('the slot to be free', async () => (await h.client.Controller.ListVolumes({}).then(() => true, () => false)) || undefined, { everyMs: 20, timeoutMs: 10_000 });
  });

  it("a backend's refusal is the stream's status, with its message", async () => {
    const err = await h.client.SnapshotMetadata.GetMetadataDelta({ base_snapshot_id: SNAP, target_snapshot_id: SNAP }).catch((e: unknown) => e);
    expect(codeName(err)).toBe('FAILED_PRECONDITION');
    expect((err as { details: string }).details).toContain('take a full backup');
  });
});
