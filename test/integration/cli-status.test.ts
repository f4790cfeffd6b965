// `tscsi-cli status` against a real driver (loop backend on its XFS pool): the volumes it
// lists, where the one in use is staged and published (from the driver's node records), and
// the pool's usage bar from the driver's /metrics, as a person would run it.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { DriverHarness, mountCap, MiB } from '../lib/driver-harness.js';
import { freePort, waitFor } from '../lib/wait.js';

const CLI = path.resolve(import.meta.dirname, '..', '..', 'dist', 'cli', 'tscsi-cli.js');

let h: DriverHarness | undefined;
let metricsUrl: string;

beforeAll(async () => {
  const port = await freePort();
  metricsUrl = `http://127.0.0.1:${port}/metrics`;
  h = await DriverHarness.start({ driver: { metricsAddress: `127.0.0.1:${port}` } });
});
afterAll(async () => {
  await h?.cleanup();
});

/** The used bytes the data pool's bar line shows ("271.0Mi of 19.9Gi used"). */
function poolUsed(out: string): number {
  const m = /\] +\d+% {2}([\d.]+)([KMG]i) of [\d.]+Gi used/.exec(out.split('\n').find((l) => l.includes('of') && l.endsWith(' used')) ?? '');
  return m ? Number(m[1]) * 1024 ** (1 + 'KMG'.indexOf(m[2][0])) : NaN;
}

const status = async (...flags: string[]) => (await execa('node', [CLI, '--endpoint', `unix://${h!.socket}`, '--state-dir', h!.stateDir, ...flags, 'status'])).stdout;

describe('tscsi-cli status', () => {
  it("shows each volume with where it is staged and published, and the pool's usage bar", async () => {
    const c = h!.client!;
    const cap = mountCap('ext4');
    const used = (await c.Controller.CreateVolume({ name: 'pvc-status-used', capacity_range: { required_bytes: String(256 * MiB) }, volume_capabilities: [cap] })).volume.volume_id as string;
    const idle = (await c.Controller.CreateVolume({ name: 'pvc-status-idle', capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [cap] })).volume.volume_id as string;
    const staging = path.join(h!.dir, 'staging', 's');
    const target = path.join(h!.dir, 'pods', 's', 'mount');
    await fs.mkdir(staging, { recursive: true });
    await c.Node.NodeStageVolume({ volume_id: used, staging_target_path: staging, volume_capability: cap });
    await c.Node.NodePublishVolume({ volume_id: used, staging_target_path: staging, target_path: target, volume_capability: cap, readonly: true });
    const before = poolUsed(await waitFor('a first status with the pool', async () => {
      const o = await status('--metrics-url', metricsUrl);
      return o.includes(' used') && o;
    }, { timeoutMs: 60_000 }));
    expect(before).toBeGreaterThan(0);
    // 96 MiB written into the pool (the sparse file takes it)
    await execa('dd', ['if=/dev/urandom', `of=${path.join(staging, 'blob')}`, 'bs=1M', 'count=96', 'conv=fsync'], { stdio: 'ignore' });

    const out = await waitFor('the pool bar to show the written data', async () => {
      const o = await status('--metrics-url', metricsUrl);
      return poolUsed(o) >= before + 90 * MiB && o;
    }, { timeoutMs: 60_000, everyMs: 1_000 });
    expect(out).toContain('node it-node: csi.tscsi.dev ');
    expect(out).toContain('volumes: 2 listed by the driver, 1 staged and 1 published here');
    const lines = out.split('\n');
    const at = (id: string) => lines.indexOf(lines.find((l) => l.startsWith(`  ${id}`))!);
    expect(lines[at(used)]).toBe(`  ${used}  256.0Mi`);
    expect(lines[at(used) + 1]).toMatch(new RegExp(`^    staged: +${staging} \\(mount, ext4, /dev/loop\\d+\\)$`));
    expect(lines[at(used) + 2]).toBe(`    published: ${target} (ro)`);
    expect(lines[at(idle)]).toBe(`  ${idle}  64.0Mi`);
    expect(lines.slice(at(idle) + 1, at(idle) + 3)).toEqual(['    staged:    -', '    published: -']);
    // the data pool: its directory, then a bar of 40 with the used share
    const pool = lines.indexOf(`  loop ${h!.dataDir}`);
    expect(pool).toBeGreaterThan(0);
    expect(lines[pool + 1]).toMatch(/^ {4}\[#*\.*\] +\d+% {2}[\d.]+[KMG]i of 19\.\dGi used$/);
    expect(lines[pool + 1].indexOf(']') - lines[pool + 1].indexOf('[') - 1).toBe(40);

    // without --metrics-url: the volumes, and how to get the pools
    expect(await status()).toContain("pools: give --metrics-url (the driver's --metrics-address");

    await c.Node.NodeUnpublishVolume({ volume_id: used, target_path: target });
    await c.Node.NodeUnstageVolume({ volume_id: used, staging_target_path: staging });
    const after = await status();
    expect(after).toContain('volumes: 2 listed by the driver, 0 staged and 0 published here');
    for (const id of [used, idle]) await c.Controller.DeleteVolume({ volume_id: id });
  });
});
