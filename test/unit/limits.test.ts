// Limits that keep a busy or huge driver answering: a cap on concurrent RPCs (refused with
// UNAVAILABLE), a cap on concurrent child processes (queued), and list pages that
// stay far below the gRPC send limit however many volumes there are.
import { describe, it, expect, afterEach } from 'vitest';
import { run, withCallSignal, setMaxChildProcesses, childProcessCounts } from '../../driver/host/exec.js';
import { CallAbortedError } from '../../driver/errors.js';
import { LIST_PAGE_MAX } from '../../driver/controller.js';
import { deriveId } from '../../driver/ids.js';
import { codeName } from '../../sidecars/common/csi-client.js';
import { startServices, type ServiceHarness } from './service-harness.js';
import { fakeVolume } from './fake-backend.js';

const mountCap = { mount: { fs_type: 'ext4' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };

function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

describe('limits', () => {
  let h: ServiceHarness | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
    setMaxChildProcesses(16);
  });

  it('beyond --max-concurrent-rpcs a call gets UNAVAILABLE at once (not RESOURCE_EXHAUSTED, which sends a claim back to the scheduler); Probe is never refused', async () => {
    h = await startServices({ maxConcurrentRpcs: 2 });
    const g = gate();
    let entered = 0;
    h.backend.hook = async (m) => {
      if (m !== 'createVolume') return;
      entered++;
      await g.promise;
    };
    const held = ['a', 'b'].map((n) => h!.client.Controller.CreateVolume({ name: n, volume_capabilities: [mountCap] }));
    while (entered < 2) await new Promise((r) => setTimeout(r, 10));
    const t0 = Date.now();
    const err = await h.client.Controller.CreateVolume({ name: 'c', volume_capabilities: [mountCap] }).catch((e: unknown) => e);
    expect(codeName(err)).toBe('UNAVAILABLE');
    expect((err as Error).message).toContain('--max-concurrent-rpcs 2');
    expect(Date.now() - t0).toBeLessThan(1_000);
    expect(codeName(await h.client.Node.NodeGetInfo({}).catch((e: unknown) => e))).toBe('UNAVAILABLE');
    expect((await h.client.Identity.Probe({})).ready.value).toBe(true);
    g.open();
    await Promise.all(held);
    // The slots are given back.
    await h.client.Controller.CreateVolume({ name: 'c', volume_capabilities: [mountCap] });
  });

  it('beyond --max-child-processes commands wait their turn; never more run at once', async () => {
    setMaxChildProcesses(2);
    // Each child reports when it really started and ended (ns), so overlap is measured, not sampled.
    const results = await Promise.all([1, 2, 3, 4, 5].map(() => run('sh', ['-c', 'date +%s%N; sleep 0.3; date +%s%N'])));
    const spans = results.map((r) => r.stdout.split('\n').map(BigInt));
    const most = Math.max(...spans.map(([start]) => spans.filter(([s, e]) => s <= start && start < e).length));
    expect(most).toBe(2);
    expect(childProcessCounts()).toEqual({ running: 0, waiting: 0 });
  });

  it('a command waiting for a slot leaves the queue when its caller gives up', async () => {
    setMaxChildProcesses(1);
    const busy = run('sleep', ['0.8']);
    const ac = new AbortController();
    const queued = withCallSignal(ac.signal, () => run('true', []));
    await new Promise((r) => setTimeout(r, 50));
    expect(childProcessCounts().waiting).toBe(1);
    ac.abort(new CallAbortedError('deadline', "the caller's deadline passed"));
    const err = await queued.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CallAbortedError);
    expect((err as CallAbortedError).reason).toBe('deadline');
    expect(childProcessCounts().waiting).toBe(0);
    await busy;
    expect(childProcessCounts()).toEqual({ running: 0, waiting: 0 });
  });

  it('ListVolumes and ListSnapshots without max_entries answer in pages, and paging returns each entry once', async () => {
    h = await startServices();
    const n = 1500;
    for (let i = 0; i < n; i++) {
      const id = deriveId('vol', 'fake', `v${i}`);
      const v = fakeVolume({
        id,
        name: `v${i}`,
        topology: { 'topology.test/node': 'n'.repeat(60) },
        published: { ['node-'.repeat(20)]: { readonly: false, accessMode: 'MULTI_NODE_MULTI_WRITER' } },
      });

      h.backend.vols.set(id, v);
      const sid = deriveId('snap', 'fake', `s${i}`);
      h.backend.snaps.set(sid, { id: sid, name: `s${i}`, sourceVolumeId: id, sizeBytes: 1n << 30n, createdAtSeconds: 1n, createdAtNanos: 0, groupSnapshotId: '', parameters: {} });
    }
    for (const rpc of ['ListVolumes', 'ListSnapshots']) {
      const seen = new Set<string>();
      let token = '';
      let pages = 0;
      do {
        const r = await h.client.Controller[rpc]({ starting_token: token });
        expect(r.entries.length).toBeLessThan(n);
        expect(r.entries.length).toBeLessThanOrEqual(LIST_PAGE_MAX);
        for (const e of r.entries) {
          const id = rpc === 'ListVolumes' ? e.volume.volume_id : e.snapshot.snapshot_id;
          expect(seen.has(id)).toBe(false);
          seen.add(id);
        }
        token = r.next_token;
        pages++;
      } while (token);
      expect(pages).toBe(2);
      expect(seen.size).toBe(n);
    }
  });
});
