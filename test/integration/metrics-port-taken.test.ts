// --metrics-address on a port something else holds (another host-network pod, a second driver
// on the node): metrics are optional, so the driver must still serve CSI, and say why it has
// no /metrics. Before, the failed bind was fatal and the node plugin crash-looped.
import { describe, it, expect, afterAll } from 'vitest';
import net from 'node:net';
import { DriverHarness } from '../lib/driver-harness.js';
import { freePort } from '../lib/wait.js';

let h: DriverHarness | undefined;
const holder = net.createServer();

afterAll(async () => {
  await h?.cleanup();
  await new Promise<void>((resolve) => holder.close(() => resolve()));
});

describe('driver metrics on a taken port', () => {
  it('the driver serves CSI without /metrics and logs why', async () => {
    const port = await freePort();
    await new Promise<void>((resolve) => holder.listen(port, '127.0.0.1', resolve));
    h = await DriverHarness.start({ driver: { metricsAddress: `127.0.0.1:${port}` } });
    const info = await h.client!.Identity.GetPluginInfo({});
    expect(info.name).toBe('csi.tscsi.dev');
    const vol = await h.client!.Controller.CreateVolume({ name: 'metrics-port-taken', volume_capabilities: [{ mount: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } }], capacity_range: { required_bytes: 16 * 1024 * 1024 } });
    await h.client!.Controller.DeleteVolume({ volume_id: vol.volume!.volume_id });
    expect(await h.log()).toMatch(/cannot serve \/metrics there; serving CSI without metrics/);
  });
});
