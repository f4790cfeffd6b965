// The real CSI services and the real gRPC server, in this process, on a private Unix socket,
// over a FakeBackend: what a CO sees when a backend answers or refuses, without devices.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { CsiServer, type ServerLimits } from '../../driver/server.js';
import { DriverContext, type DriverConfig } from '../../driver/context.js';
import { IdentityService } from '../../driver/identity.js';
import { ControllerService } from '../../driver/controller.js';
import { GroupControllerService } from '../../driver/groupcontroller.js';
import { NodeService } from '../../driver/node.js';
import { NodeStateStore } from '../../driver/nodestate.js';
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

export async function startServices(limits: Partial<ServerLimits> = {}): Promise<ServiceHarness> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-unit-svc-'));
  const log = pino({ level: 'silent' });
  const config: DriverConfig = {
    driverName: 'csi.test',
    version: '0',
    nodeId: 'n1',
    topologyKey: 'topology.test/node',
    maxVolumesPerNode: 10,
    defaultFsType: 'ext4',
    defaultBackend: 'fake',
    nodeStateDir: path.join(dir, 'node'),
    defaultVolumeBytes: 1n << 30n,
  };
  const backend = new FakeBackend();
  const ctx = new DriverContext(config, new Map([['fake', backend]]), log);
  const state = new NodeStateStore(config.nodeStateDir);
  await state.init();
  const server = new CsiServer(
    {
      identity: new IdentityService(ctx, [dir]),
      controller: new ControllerService(ctx),
      groupController: new GroupControllerService(ctx),
      // Requests stage and publish below dir, as kubelet does below /var/lib/kubelet.
      node: new NodeService(ctx, state, [dir]),
    },
    log,
    limits,
  );
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
