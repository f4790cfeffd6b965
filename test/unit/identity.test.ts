// GetPluginCapabilities advertises what the driver's --mode serves (#13 follow-up): a node
// plugin answering CONTROLLER_SERVICE, GROUP_CONTROLLER_SERVICE or SNAPSHOT_METADATA_SERVICE
// invites the CO to call services that are not there. Each mode runs the real services
// behind the real gRPC server; the capability list is what a CO reads.
import { describe, it, expect, afterEach } from 'vitest';
import type { SnapshotBlocks } from '../../driver/backends/backend.js';
import { codeName } from '../../sidecars/common/csi-client.js';
import { FakeBackend } from './fake-backend.js';
import { startServices, type ServiceHarness } from './service-harness.js';

let h: ServiceHarness | undefined;

afterEach(async () => {
  await h?.close();
  h = undefined;
});

/** A backend with changed-block tracking (its answers are never asked for here). */
function withBlocks(): FakeBackend {
  const b = new FakeBackend('cbt');
  const never = () => Promise.reject(new Error('not asked in this test'));
  b.snapshotBlocks = { allocated: never, delta: never } satisfies SnapshotBlocks;
  return b;
}

async function capabilities(mode: 'all' | 'controller' | 'node'): Promise<string[]> {
  h = await startServices({ mode, moreBackends: [withBlocks()] });
  const r = await h.client.Identity.GetPluginCapabilities({});
  return r.capabilities.map((c: { service?: { type: string }; volume_expansion?: { type: string } }) => c.service?.type ?? `volume_expansion:${c.volume_expansion?.type}`).sort();
}

const CONTROLLER_SIDE = ['CONTROLLER_SERVICE', 'GROUP_CONTROLLER_SERVICE', 'SNAPSHOT_ACCESSIBILITY_CONSTRAINTS', 'SNAPSHOT_METADATA_SERVICE'];
const BOTH_SIDES = ['VOLUME_ACCESSIBILITY_CONSTRAINTS', 'volume_expansion:ONLINE'];

describe('GetPluginCapabilities per --mode', () => {
  it('all: the controller side and what both sides share', async () => {
    expect(await capabilities('all')).toEqual([...CONTROLLER_SIDE, ...BOTH_SIDES].sort());
  });

  it('controller: the same, and its controller answers', async () => {
    expect(await capabilities('controller')).toEqual([...CONTROLLER_SIDE, ...BOTH_SIDES].sort());
    expect((await h!.client.Controller.ControllerGetCapabilities({})).capabilities.length).toBeGreaterThan(0);
  });

  it('node: no controller, group controller or snapshot metadata service, which it does not serve', async () => {
    expect(await capabilities('node')).toEqual([...BOTH_SIDES].sort());
    for (const call of [
      () => h!.client.Controller.ControllerGetCapabilities({}),
      () => h!.client.GroupController.GroupControllerGetCapabilities({}),
    ]) {
      expect(codeName(await call().then(() => undefined, (e: unknown) => e))).toBe('UNIMPLEMENTED');
    }
    expect((await h!.client.Node.NodeGetCapabilities({})).capabilities.length).toBeGreaterThan(0);
  });

  it('SNAPSHOT_METADATA_SERVICE only when a backend can tell changed blocks', async () => {
    h = await startServices({ mode: 'all' });
    const caps = (await h.client.Identity.GetPluginCapabilities({})).capabilities.map((c: { service?: { type: string } }) => c.service?.type);
    expect(caps).toContain('CONTROLLER_SERVICE');
    expect(caps).not.toContain('SNAPSHOT_METADATA_SERVICE');
  });
});
