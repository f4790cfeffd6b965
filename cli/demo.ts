// The CLI's demo: start a driver on a temporary loop backend (as a process of its own) and
// walk one volume through its whole life over CSI, printing each step and its latency.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { CsiClient } from '../sidecars/common/csi-client.js';
import { parseSize } from '../lib/size.js';

/** How long the demo's driver may take to create its socket. */
const DRIVER_START_TIMEOUT_MS = 10_000;
const DRIVER_START_POLL_MS = 50;

/**
 * The driver's entry point, found as the package's "tscsi/driver" export: where the package
 * is installed decides it (the repository, the image's /app), not where this file sits.
 */
export function driverEntryPoint(): string {
  return fileURLToPath(import.meta.resolve('tscsi/driver'));
}

function note(text: string) {
  process.stdout.write(`           ${text}\n`);
}

async function step<T>(title: string, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  const r = await fn();
  process.stdout.write(`[${(performance.now() - t0).toFixed(1).padStart(7)} ms] ${title}\n`);
  return r;
}

/** The loop devices whose backing file lies below dir, from `losetup -J` (a path may hold spaces). */
export function loopDevicesBelow(losetupJson: string, dir: string): string[] {
  if (!losetupJson.trim()) return []; // losetup prints nothing when no device is set up
  const devices = (JSON.parse(losetupJson) as { loopdevices?: Array<{ name: string; 'back-file'?: string | null }> }).loopdevices ?? [];
  return devices.filter((d) => d['back-file']?.startsWith(`${dir}/`)).map((d) => d.name);
}

interface DemoDirs {
  dir: string;
  socket: string;
  data: string;
  logFile: string;
}

async function startDriver(d: DemoDirs): Promise<ChildProcess> {
  const entry = driverEntryPoint();
  process.stdout.write(`starting the driver: ${entry}\n  socket ${d.socket}\n  data   ${d.data} (an XFS pool image, so snapshots are reflinks)\n  log    ${d.logFile}\n\n`);
  // The node service stages and publishes only below roots that exist (as /var/lib/kubelet does).
  for (const root of ['staging', 'pod']) await fs.mkdir(path.join(d.dir, root));
  const log = await fs.open(d.logFile, 'a');
  const args = ['--endpoint', `unix://${d.socket}`, '--node-id', os.hostname(), '--data-dir', d.data, '--data-pool-size', '10Gi', '--state-dir', path.join(d.dir, 'node')];
  const roots = ['--allowed-path-root', path.join(d.dir, 'staging'), '--allowed-path-root', path.join(d.dir, 'pod')];
  const driver = spawn(process.execPath, [entry, ...args, ...roots], { stdio: ['ignore', 'ignore', log.fd] });
  await log.close();
  for (let waited = 0; !existsSync(d.socket); waited += DRIVER_START_POLL_MS) {
    if (driver.exitCode !== null || waited > DRIVER_START_TIMEOUT_MS) throw new Error(`driver did not start:\n${await fs.readFile(d.logFile, 'utf8')}`);
    await new Promise((r) => setTimeout(r, DRIVER_START_POLL_MS));
  }
  return driver;
}

/** The mount points at or below dir, deepest first (a "pod" mount before its staging mount before the pool). */
export function mountsBelow(findmntJson: string, dir: string): string[] {
  if (!findmntJson.trim()) return [];
  const targets = (JSON.parse(findmntJson) as { filesystems?: Array<{ target: string }> }).filesystems?.map((f) => f.target) ?? [];
  return targets.filter((t) => t === dir || t.startsWith(`${dir}/`)).sort((a, b) => b.length - a.length);
}

/**
 * Stops the demo's driver, then unmounts and detaches whatever the demo left (all of it
 * when a step failed half-way) and removes its directory.
 */
async function cleanUp(driver: ChildProcess | undefined, d: DemoDirs): Promise<void> {
  if (driver && driver.exitCode === null) {
    const exited = new Promise((r) => driver.once('exit', r));
    driver.kill('SIGTERM');
    await exited;
  }
  // Twice: the pool cannot be unmounted while a volume's loop device holds a file in it,
  // and the pool's own loop device goes only once the pool is unmounted.
  for (let pass = 0; pass < 2; pass++) {
    const mounts = await execa('findmnt', ['-J', '-l', '-o', 'TARGET'], { reject: false });
    for (const target of mountsBelow(String(mounts.stdout), d.dir)) await execa('umount', [target], { reject: false });
    const loops = await execa('losetup', ['-J', '-l', '-O', 'NAME,BACK-FILE'], { reject: false });
    for (const dev of loopDevicesBelow(String(loops.stdout), d.dir)) await execa('losetup', ['-d', dev], { reject: false });
  }
  await fs.rm(d.dir, { recursive: true, force: true });
}

/** The demo's walk: one volume from CreateVolume to DeleteVolume, with a snapshot, a restore and an expansion. */
async function walkThrough(c: CsiClient, dir: string): Promise<void> {
  const info = await step('GetPluginInfo', () => c.Identity.GetPluginInfo({}));
  note(`driver ${info.name} ${info.vendor_version}`);
  const node = await step('NodeGetInfo', () => c.Node.NodeGetInfo({}));
  const cap = { mount: { fs_type: 'xfs', mount_flags: ['noatime'] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
  const vol = (await step('CreateVolume pvc-demo (512 MiB, xfs)', () => c.Controller.CreateVolume({ name: 'pvc-demo', capacity_range: { required_bytes: String(parseSize('512Mi')) }, volume_capabilities: [cap] }))).volume;
  note(`volume_id ${vol.volume_id}, topology ${JSON.stringify(vol.accessible_topology[0].segments)}`);
  await step('ControllerPublishVolume', () => c.Controller.ControllerPublishVolume({ volume_id: vol.volume_id, node_id: node.node_id, volume_capability: cap }));
  const staging = path.join(dir, 'staging', 'pvc-demo');
  const target = path.join(dir, 'pod', 'volumes', 'pvc-demo');
  await fs.mkdir(staging, { recursive: true });
  await step('NodeStageVolume (loop device, mkfs.xfs, mount)', () => c.Node.NodeStageVolume({ volume_id: vol.volume_id, staging_target_path: staging, volume_capability: cap }));
  await step('NodePublishVolume (bind mount into the "pod")', () => c.Node.NodePublishVolume({ volume_id: vol.volume_id, staging_target_path: staging, target_path: target, volume_capability: cap }));
  note(`staged: ${(await execa('findmnt', ['-n', '-o', 'SOURCE,FSTYPE,OPTIONS', '--mountpoint', staging])).stdout}`);
  await fs.writeFile(path.join(target, 'greeting.txt'), 'hello from a pod\n');
  note('wrote greeting.txt into the published volume');
  const snap = (await step('CreateSnapshot (fsfreeze + reflink)', () => c.Controller.CreateSnapshot({ name: 'snap-demo', source_volume_id: vol.volume_id }))).snapshot;
  note(`snapshot_id ${snap.snapshot_id}, ready ${snap.ready_to_use}`);
  const restored = (await step('CreateVolume pvc-restored from the snapshot', () => c.Controller.CreateVolume({ name: 'pvc-restored', volume_capabilities: [cap], volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } } }))).volume;
  const staging2 = path.join(dir, 'staging', 'pvc-restored');
  await fs.mkdir(staging2, { recursive: true });
  await step('NodeStageVolume pvc-restored', () => c.Node.NodeStageVolume({ volume_id: restored.volume_id, staging_target_path: staging2, volume_capability: cap }));
  note(`restored greeting.txt: ${JSON.stringify(await fs.readFile(path.join(staging2, 'greeting.txt'), 'utf8'))}`);
  await step('ControllerExpandVolume to 1 GiB', () => c.Controller.ControllerExpandVolume({ volume_id: vol.volume_id, capacity_range: { required_bytes: String(parseSize('1Gi')) } }));
  await step('NodeExpandVolume (losetup -c, xfs_growfs, online)', () => c.Node.NodeExpandVolume({ volume_id: vol.volume_id, volume_path: target }));
  const stats = await step('NodeGetVolumeStats', () => c.Node.NodeGetVolumeStats({ volume_id: vol.volume_id, volume_path: target }));
  for (const u of stats.usage) note(`${u.unit.padEnd(6)} total ${u.total} used ${u.used} available ${u.available}`);
  const health = await step('NodeGetVolumeHealth', () => c.Node.NodeGetVolumeHealth({ volume_id: vol.volume_id, volume_publish_path: target }));
  const problems = health.volume_health.health_statuses;
  note(`health: ${problems.length ? problems.map((h: { status: string; reason: string; message: string }) => `${h.status} ${h.reason}: ${h.message}`).join('; ') : 'no problem known'}`);
  const listed = await step('ListVolumes', () => c.Controller.ListVolumes({}));
  for (const e of listed.entries) note(`${e.volume.volume_id} ${e.volume.capacity_bytes} bytes, published to [${e.status.published_node_ids.join(', ')}]`);
  await step('NodeUnstageVolume pvc-restored', () => c.Node.NodeUnstageVolume({ volume_id: restored.volume_id, staging_target_path: staging2 }));
  await step('NodeUnpublishVolume', () => c.Node.NodeUnpublishVolume({ volume_id: vol.volume_id, target_path: target }));
  await step('NodeUnstageVolume', () => c.Node.NodeUnstageVolume({ volume_id: vol.volume_id, staging_target_path: staging }));
  await step('ControllerUnpublishVolume', () => c.Controller.ControllerUnpublishVolume({ volume_id: vol.volume_id, node_id: node.node_id }));
  await step('DeleteSnapshot', () => c.Controller.DeleteSnapshot({ snapshot_id: snap.snapshot_id }));
  await step('DeleteVolume pvc-restored', () => c.Controller.DeleteVolume({ volume_id: restored.volume_id }));
  await step('DeleteVolume pvc-demo', () => c.Controller.DeleteVolume({ volume_id: vol.volume_id }));
  const left = await c.Controller.ListVolumes({});
  process.stdout.write(`\nvolumes left: ${left.entries.length}. The whole lifecycle worked.\n`);
}

export async function demo(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('demo needs root: it makes loop devices, filesystems and mounts');
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-demo-'));
  const dirs: DemoDirs = { dir, socket: path.join(dir, 'csi.sock'), data: path.join(dir, 'data'), logFile: path.join(dir, 'driver.log') };
  let driver: ChildProcess | undefined;
  let c: CsiClient | undefined;
  try {
    driver = await startDriver(dirs);
    c = new CsiClient(dirs.socket);
    await walkThrough(c, dir);
  } catch (err) {
    process.stdout.write(`\nthe demo failed; the driver's log:\n${await fs.readFile(dirs.logFile, 'utf8').catch(() => '(none)')}\n`);
    throw err;
  } finally {
    c?.close();
    await cleanUp(driver, dirs);
  }
}
