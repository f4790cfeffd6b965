#!/usr/bin/env node
// A small CSI client for people: inspect a running driver, or (demo) start one on the loop
// backend and walk a volume through its whole life, printing each step. It speaks to the
// driver only through CSI over its socket, like the sidecars, and shares their client.
import { parseArgs } from 'node:util';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { CsiClient, codeName } from '../common/csi-client.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DRIVER = path.resolve(HERE, '..', '..', 'driver', 'main.js');

const USAGE = `tscsi-cli [--endpoint unix:///run/tscsi/csi.sock] COMMAND

  info                       plugin name, version, capabilities, node
  volumes                    ListVolumes
  snapshots                  ListSnapshots
  capacity                   GetCapacity
  create NAME SIZE [FSTYPE]  CreateVolume (SIZE like 1Gi)
  delete VOLUME_ID           DeleteVolume
  demo                       start a driver on a temporary loop backend and walk one volume
                             through create, stage, publish, write, snapshot, restore, expand,
                             stats and delete (needs root)
`;

const MiB = 1024n * 1024n;
const sizes: Record<string, bigint> = { Mi: MiB, Gi: 1024n * MiB, Ti: 1024n * 1024n * MiB };
function parseSize(s: string): bigint {
  const m = /^(\d+)(Mi|Gi|Ti)?$/.exec(s);
  if (!m) throw new Error(`not a size: ${s}`);
  return BigInt(m[1]) * (m[2] ? sizes[m[2]] : 1n);
}

function show(title: string, value: unknown) {
  process.stdout.write(`\n== ${title}\n${JSON.stringify(value, null, 2)}\n`);
}

async function step<T>(title: string, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  const r = await fn();
  process.stdout.write(`[${(performance.now() - t0).toFixed(1).padStart(7)} ms] ${title}\n`);
  return r;
}

async function demo(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('demo needs root: it makes loop devices, filesystems and mounts');
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-demo-'));
  const socket = path.join(dir, 'csi.sock');
  const data = path.join(dir, 'data');
  const logFile = path.join(dir, 'driver.log');
  const log = await fs.open(logFile, 'a');
  process.stdout.write(`starting the driver: ${DRIVER}\n  socket ${socket}\n  data   ${data} (an XFS pool image, so snapshots are reflinks)\n  log    ${logFile}\n\n`);
  const driver = spawn(process.execPath, [DRIVER, '--endpoint', `unix://${socket}`, '--node-id', os.hostname(), '--data-dir', data, '--data-pool-size', '10Gi', '--state-dir', path.join(dir, 'node'), '--allowed-path-root', path.join(dir, 'staging'), '--allowed-path-root', path.join(dir, 'pod')], {
    stdio: ['ignore', 'ignore', log.fd],
  });
  await log.close();
  let c: CsiClient | undefined;
  try {
    for (let i = 0; !existsSync(socket); i++) {
      if (driver.exitCode !== null || i > 200) throw new Error(`driver did not start:\n${await fs.readFile(logFile, 'utf8')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    c = new CsiClient(socket);
    const info = await step('GetPluginInfo', () => c!.Identity.GetPluginInfo({}));
    process.stdout.write(`           driver ${info.name} ${info.vendor_version}\n`);
    const node = await step('NodeGetInfo', () => c!.Node.NodeGetInfo({}));
    const cap = { mount: { fs_type: 'xfs', mount_flags: ['noatime'] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
    const vol = (await step('CreateVolume pvc-demo (512 MiB, xfs)', () => c!.Controller.CreateVolume({ name: 'pvc-demo', capacity_range: { required_bytes: String(512n * MiB) }, volume_capabilities: [cap] }))).volume;
    process.stdout.write(`           volume_id ${vol.volume_id}, topology ${JSON.stringify(vol.accessible_topology[0].segments)}\n`);
    await step('ControllerPublishVolume', () => c!.Controller.ControllerPublishVolume({ volume_id: vol.volume_id, node_id: node.node_id, volume_capability: cap }));
    const staging = path.join(dir, 'staging', 'pvc-demo');
    const target = path.join(dir, 'pod', 'volumes', 'pvc-demo');
    await fs.mkdir(staging, { recursive: true });
    await step('NodeStageVolume (loop device, mkfs.xfs, mount)', () => c!.Node.NodeStageVolume({ volume_id: vol.volume_id, staging_target_path: staging, volume_capability: cap }));
    await step('NodePublishVolume (bind mount into the "pod")', () => c!.Node.NodePublishVolume({ volume_id: vol.volume_id, staging_target_path: staging, target_path: target, volume_capability: cap }));
    const dev = (await execa('findmnt', ['-n', '-o', 'SOURCE,FSTYPE,OPTIONS', '--mountpoint', staging])).stdout;
    process.stdout.write(`           staged: ${dev}\n`);
    await fs.writeFile(path.join(target, 'greeting.txt'), 'hello from a pod\n');
    process.stdout.write(`           wrote greeting.txt into the published volume\n`);
    const snap = (await step('CreateSnapshot (fsfreeze + reflink)', () => c!.Controller.CreateSnapshot({ name: 'snap-demo', source_volume_id: vol.volume_id }))).snapshot;
    process.stdout.write(`           snapshot_id ${snap.snapshot_id}, ready ${snap.ready_to_use}\n`);
    const restored = (await step('CreateVolume pvc-restored from the snapshot', () => c!.Controller.CreateVolume({ name: 'pvc-restored', volume_capabilities: [cap], volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } } }))).volume;
    const staging2 = path.join(dir, 'staging', 'pvc-restored');
    await fs.mkdir(staging2, { recursive: true });
    await step('NodeStageVolume pvc-restored', () => c!.Node.NodeStageVolume({ volume_id: restored.volume_id, staging_target_path: staging2, volume_capability: cap }));
    process.stdout.write(`           restored greeting.txt: ${JSON.stringify(await fs.readFile(path.join(staging2, 'greeting.txt'), 'utf8'))}\n`);
    await step('ControllerExpandVolume to 1 GiB', () => c!.Controller.ControllerExpandVolume({ volume_id: vol.volume_id, capacity_range: { required_bytes: String(1024n * MiB) } }));
    await step('NodeExpandVolume (losetup -c, xfs_growfs, online)', () => c!.Node.NodeExpandVolume({ volume_id: vol.volume_id, volume_path: target }));
    const stats = await step('NodeGetVolumeStats', () => c!.Node.NodeGetVolumeStats({ volume_id: vol.volume_id, volume_path: target }));
    for (const u of stats.usage) process.stdout.write(`           ${u.unit.padEnd(6)} total ${u.total} used ${u.used} available ${u.available}\n`);
    process.stdout.write(`           condition: ${stats.volume_condition.abnormal ? 'ABNORMAL' : 'normal'} (${stats.volume_condition.message})\n`);
    const listed = await step('ListVolumes', () => c!.Controller.ListVolumes({}));
    for (const e of listed.entries) process.stdout.write(`           ${e.volume.volume_id} ${e.volume.capacity_bytes} bytes, published to [${e.status.published_node_ids.join(', ')}]\n`);
    await step('NodeUnstageVolume pvc-restored', () => c!.Node.NodeUnstageVolume({ volume_id: restored.volume_id, staging_target_path: staging2 }));
    await step('NodeUnpublishVolume', () => c!.Node.NodeUnpublishVolume({ volume_id: vol.volume_id, target_path: target }));
    await step('NodeUnstageVolume', () => c!.Node.NodeUnstageVolume({ volume_id: vol.volume_id, staging_target_path: staging }));
    await step('ControllerUnpublishVolume', () => c!.Controller.ControllerUnpublishVolume({ volume_id: vol.volume_id, node_id: node.node_id }));
    await step('DeleteSnapshot', () => c!.Controller.DeleteSnapshot({ snapshot_id: snap.snapshot_id }));
    await step('DeleteVolume pvc-restored', () => c!.Controller.DeleteVolume({ volume_id: restored.volume_id }));
    await step('DeleteVolume pvc-demo', () => c!.Controller.DeleteVolume({ volume_id: vol.volume_id }));
    const left = await c.Controller.ListVolumes({});
    process.stdout.write(`\nvolumes left: ${left.entries.length}. The whole lifecycle worked.\n`);
  } finally {
    c?.close();
    if (driver.exitCode === null) {
      const exited = new Promise((r) => driver.once('exit', r));
      driver.kill('SIGTERM');
      await exited;
    }
    // The pool: unmount and detach what the demo made, then remove its directory.
    await execa('umount', [data], { reject: false });
    const loops = await execa('losetup', ['-l', '-n', '-O', 'NAME,BACK-FILE'], { reject: false });
    for (const line of String(loops.stdout).split('\n')) {
      const [name, file] = line.trim().split(/\s+/);
      if (file?.startsWith(dir + '/')) await execa('losetup', ['-d', name], { reject: false });
    }
    await fs.rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    options: { endpoint: { type: 'string', default: 'unix:///run/tscsi/csi.sock' }, help: { type: 'boolean', default: false } },
    allowPositionals: true,
  });
  const [cmd, ...args] = positionals;
  if (values.help || !cmd) {
    process.stdout.write(USAGE);
    return;
  }
  if (cmd === 'demo') return demo();
  const c = new CsiClient(values.endpoint!);
  try {
    switch (cmd) {
      case 'info':
        show('plugin', await c.Identity.GetPluginInfo({}));
        show('plugin capabilities', await c.Identity.GetPluginCapabilities({}));
        show('controller capabilities', await c.Controller.ControllerGetCapabilities({}));
        show('node', await c.Node.NodeGetInfo({}));
        return;
      case 'volumes':
        show('volumes', await c.Controller.ListVolumes({}));
        return;
      case 'snapshots':
        show('snapshots', await c.Controller.ListSnapshots({}));
        return;
      case 'capacity':
        show('capacity', await c.Controller.GetCapacity({}));
        return;
      case 'create': {
        const [name, size, fsType = ''] = args;
        if (!name || !size) throw new Error('usage: create NAME SIZE [FSTYPE]');
        show('created', await c.Controller.CreateVolume({ name, capacity_range: { required_bytes: parseSize(size).toString() }, volume_capabilities: [{ mount: { fs_type: fsType }, access_mode: { mode: 'SINGLE_NODE_WRITER' } }] }));
        return;
      }
      case 'delete':
        if (!args[0]) throw new Error('usage: delete VOLUME_ID');
        await c.Controller.DeleteVolume({ volume_id: args[0] });
        process.stdout.write(`deleted ${args[0]}\n`);
        return;
      default:
        throw new Error(`unknown command ${cmd}\n${USAGE}`);
    }
  } finally {
    c.close();
  }
}

main().catch((err: unknown) => {
  const code = codeName(err);
  process.stderr.write(`tscsi-cli: ${code ? `${code}: ` : ''}${(err as { details?: string }).details ?? (err instanceof Error ? err.message : String(err))}\n`);
  process.exit(1);
});
