// The real CSI services and the real gRPC server, in this process, on a private Unix socket,
// over a FakeBackend: what a CO sees when a backend answers or refuses, without devices.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import type { CsiServer } from '../../driver/server.js';
import type { DriverContext } from '../../driver/context.js';
import type { NodeStateStore } from '../../driver/nodestate.js';
import { resolveSettings, type DriverOptions } from '../../driver/config.js';
import { createDriver } from '../../driver/create.js';
import { CsiClient } from '../../sidecars/common/csi-client.js';
import { FakeBackend } from './fake-backend.js';

export interface ServiceHarness {
  dir: string;
  backend: FakeBackend;
  ctx: DriverContext;
  state: NodeStateStore;
  client: CsiClient;
  server: CsiServer;
  close(): Promise<void>;
}

export interface ServiceOptions extends Pick<Partial<DriverOptions>, 'maxConcurrentRpcs' | 'mode'> {
  /** More fakes beside the default one ('fake'), each with a name of its own. */
  moreBackends?: FakeBackend[];
}

export async function startServices({ moreBackends = [], ...limits }: ServiceOptions = {}): Promise<ServiceHarness> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-unit-svc-'));
  const log = pino({ level: 'silent' });
  const settings = resolveSettings(
    {
      driverName: 'csi.test',
      nodeId: 'n1',
      topologyKey: 'topology.test/node',
      maxVolumesPerNode: 10,
      defaultBackend: 'fake',
      stateDir: path.join(dir, 'node'),
      // Requests stage and publish below dir, as kubelet does below /var/lib/kubelet.
      allowedPathRoot: [dir],
      ...limits,
    },
    { backendNames: ['fake', ...moreBackends.map((b) => b.name)] },
  );
  const backend = new FakeBackend();
  const { ctx, server, nodeState: state } = await createDriver(settings, { log, backends: [backend, ...moreBackends] });
  const socket = path.join(dir, 'csi.sock');
  await server.listen(`unix://${socket}`);
  const client = new CsiClient(socket, 10_000);
  return {
    dir,
    backend,
    ctx,
    state,
    client,
    server,
    async close() {
      client.close();
      await server.shutdown(1_000);
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}
