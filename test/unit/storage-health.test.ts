// NodeGetStorageHealth answers one entry per (status, reason) across every backend the node
// serves (CSI v1.13: "MUST NOT return multiple StorageBackendHealth messages with the same
// (status, reason, volume_capability) combination"), and that entry names each backend that
// reports it. Two backends behind the real Node service and gRPC server report the same reason.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { FakeBackend } from './fake-backend.js';
import { startServices, type ServiceHarness } from './service-harness.js';
import { mergeSameReason } from '../../driver/backends/problems.js';

let h: ServiceHarness;
const second = new FakeBackend('second');

beforeAll(async () => {
  h = await startServices({ moreBackends: [second] });
});

afterAll(async () => {
  await h?.close();
});

interface Entry {
  status: string;
  reason: string;
  message: string;
}

const storage = async (): Promise<Entry[]> => (await h.client.Node.NodeGetStorageHealth({})).backend_health ?? [];

describe('NodeGetStorageHealth across backends', () => {
  it('two backends with the same (status, reason): one entry naming both', async () => {
    h.backend.storage = [
      { status: 'STORAGE_UNREACHABLE', reason: 'ClusterUnreachable', message: 'monitors of cluster A do not answer' },
      { status: 'STORAGE_DEGRADED', reason: 'NearlyFull', message: 'pool A is 95% full' },
    ];
    second.storage = [
      { status: 'STORAGE_UNREACHABLE', reason: 'ClusterUnreachable', message: 'monitors of cluster B do not answer' },
      // Same reason, other status: a different entry.
      { status: 'STORAGE_UNREACHABLE', reason: 'NearlyFull', message: 'pool B is full' },
    ];
    const got = await storage();
    expect(got.map((e) => `${e.status}/${e.reason}`).sort()).toEqual(['STORAGE_DEGRADED/NearlyFull', 'STORAGE_UNREACHABLE/ClusterUnreachable', 'STORAGE_UNREACHABLE/NearlyFull']);
    const merged = got.find((e) => e.reason === 'ClusterUnreachable')!;
    expect(merged.message).toBe('fake: monitors of cluster A do not answer; second: monitors of cluster B do not answer');
    expect(got.find((e) => e.status === 'STORAGE_UNREACHABLE' && e.reason === 'NearlyFull')!.message).toBe('second: pool B is full');
  });

  it('nothing wrong anywhere: no entry', async () => {
    h.backend.storage = [];
    second.storage = [];
    expect(await storage()).toEqual([]);
  });
});

describe('mergeSameReason', () => {
  it('keeps the order of first appearance and says a repeated message once', () => {
    const p = (status: string, reason: string, message: string) => ({ status, reason, message });
    expect(mergeSameReason([p('INACCESSIBLE', 'A', 'x'), p('DEGRADED', 'B', 'y'), p('INACCESSIBLE', 'A', 'z'), p('INACCESSIBLE', 'A', 'x')])).toEqual([
      p('INACCESSIBLE', 'A', 'x; z'),
      p('DEGRADED', 'B', 'y'),
    ]);
  });
});
