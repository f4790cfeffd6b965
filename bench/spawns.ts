#!/usr/bin/env node
// Host tools the driver spawns per node RPC, and the driver's own CPU per lifecycle: figures
// that do not move with the machine's load, unlike wall-clock latency. Runs the real driver
// (loop backend on its own XFS pool; with --lvm, also an LVM VG on a loop PV in nodm mode),
// walks volumes through create, stage (mkfs), publish, unpublish, unstage, stage again (the
// filesystem is there now), unstage, delete, and reads
// the driver's own tool counter (tscsi_child_processes_seconds_count, by tool) around each RPC.
//   node dist/bench/spawns.js [--backend loop|lvm] [--fs-type ext4|xfs|btrfs] [--rounds N]
//     [--timed 1,8 --timed-ops N]: then N whole lifecycles (create, stage, publish, unpublish,
//     unstage, delete) at each concurrency, wall time per lifecycle (p50, p90).
import { parseArgs } from 'node:util';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { execa } from 'execa';
import { CsiClient } from '../sidecars/common/csi-client.js';
import { optionsToArgv, type DriverOptions } from '../driver/config.js';
import { DRIVER_MAIN } from './subjects.js';
import { cleanupDir, tool } from './host.js';
import { readCpu } from './proc.js';
import { percentile } from './stats.js';

// The second stage finds the filesystem the first one made (a pod back on the node).
const STEPS = ['CreateVolume', 'NodeStageVolume', 'NodePublishVolume', 'NodeUnpublishVolume', 'NodeUnstageVolume', 'NodeStageVolume again', 'NodeUnstageVolume again', 'DeleteVolume'] as const;
type Step = (typeof STEPS)[number];

async function toolCounts(port: number): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^tscsi_child_processes_seconds_count\{([^}]*)\} (\d+)/gm)) {
    const t = /tool="([^"]+)"/.exec(m[1])?.[1] ?? '?';
    out.set(t, (out.get(t) ?? 0) + Number(m[2]));
  }
  return out;
}

const mean = (x: number) => String(Number(x.toFixed(1)));

function diff(a: Map<string, number>, b: Map<string, number>): Map<string, number> {
  const out = new Map<string, number>();
  for (const [k, v] of b) if (v - (a.get(k) ?? 0) > 0) out.set(k, v - (a.get(k) ?? 0));
  return out;
}

async function makeVg(dir: string): Promise<{ vg: string; pv: string; conf: string }> {
  const img = path.join(dir, 'pv.img');
  await tool('truncate', ['-s', '4G', img]);
  const pv = (await tool('losetup', ['-f', '--show', img])).trim();
  const conf = path.join(dir, 'lvmconf');
  await fs.mkdir(conf);
  await fs.writeFile(path.join(conf, 'lvm.conf'), `devices { filter = [ "a|^${pv}$|", "r|.*|" ] use_devicesfile = 0 obtain_device_list_from_udev = 0 }\nbackup { backup = 0 archive = 0 }\nglobal { activation = 0 }\n`);
  const vg = `tscsispawns${process.pid}`;
  await execa('lvm', ['vgcreate', '-q', vg, pv], { env: { LVM_SYSTEM_DIR: conf, LVM_SUPPRESS_FD_WARNINGS: '1' } });
  return { vg, pv, conf };
}

type Cap = { mount: { fs_type: string; mount_flags: string[] }; access_mode: { mode: string } };

/** One whole lifecycle of a new volume, timed; each worker keeps its own directories. */
async function timedLifecycles(c: CsiClient, work: string, cap: Cap, params: Record<string, string>, concurrency: number, ops: number): Promise<number[]> {
  const times: number[] = [];
  let next = 0;
  const worker = async (w: number) => {
    const staging = path.join(work, `tc${concurrency}w${w}s`);
    const target = path.join(work, `tc${concurrency}w${w}t`);
    await fs.mkdir(staging);
    for (let i = next++; i < ops; i = next++) {
      const t0 = performance.now();
      const id = (await c.Controller.CreateVolume({ name: `timed-${concurrency}-${i}`, capacity_range: { required_bytes: String(64 << 20) }, volume_capabilities: [cap], parameters: params })).volume.volume_id as string;
      await c.Node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap });
      await c.Node.NodePublishVolume({ volume_id: id, staging_target_path: staging, target_path: target, volume_capability: cap });
      await c.Node.NodeUnpublishVolume({ volume_id: id, target_path: target });
      await c.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging });
      await c.Controller.DeleteVolume({ volume_id: id });
      times.push(performance.now() - t0);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_x, w) => worker(w)));
  return times;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      backend: { type: 'string', default: 'loop' },
      rounds: { type: 'string', default: '5' },
      'fs-type': { type: 'string', default: 'ext4' },
      timed: { type: 'string', default: '' },
      'timed-ops': { type: 'string', default: '16' },
    },
  });
  const backend = values.backend!;
  const rounds = Number(values.rounds);
  const fsType = values['fs-type']!;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-spawns-'));
  const work = path.join(dir, 'work');
  await fs.mkdir(work, { recursive: true });
  const port = 20000 + (process.pid % 20000);
  const sock = path.join(dir, 'csi.sock');
  let vg: { vg: string; pv: string; conf: string } | undefined;
  const proc = { pid: 0, kill: () => {} } as { pid: number; kill: () => void };
  try {
    if (backend === 'lvm') vg = await makeVg(dir);
    const opts: DriverOptions = {
      endpoint: `unix://${sock}`,
      nodeId: 'spawns-node',
      dataDir: path.join(dir, 'data'),
      dataPoolSize: '8Gi',
      stateDir: path.join(dir, 'node'),
      allowedPathRoot: [work],
      metricsAddress: `127.0.0.1:${port}`,
      defaultFsType: fsType,
      logLevel: 'warn',
      ...(vg ? { lvmVolumeGroups: vg.vg, lvmDevices: vg.pv, lvmMode: 'nodm' } : {}),
    };
    const log = await fs.open(path.join(dir, 'driver.log'), 'a');
    const p = spawn(process.execPath, [process.env.TSCSI_BENCH_DRIVER ?? DRIVER_MAIN, ...optionsToArgv(opts)], { stdio: ['ignore', log.fd, log.fd] });
    await log.close();
    proc.pid = p.pid!;
    proc.kill = () => p.kill('SIGTERM');
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    for (let i = 0; !existsSync(sock); i++) {
      if (i > 600 || p.exitCode !== null) throw new Error(`driver did not start: ${await fs.readFile(path.join(dir, 'driver.log'), 'utf8')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const c = new CsiClient(sock, 120_000);
    await c.Identity.Probe({});
    const cap = { mount: { fs_type: fsType, mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
    const per = new Map<Step, Map<string, number>>(STEPS.map((s) => [s, new Map()]));
    let cpu = 0;
    for (let r = 0; r < rounds; r++) {
      const staging = path.join(work, `s${r}`);
      const target = path.join(work, `t${r}`);
      await fs.mkdir(staging);
      let id = '';
      const calls: Record<Step, () => Promise<unknown>> = {
        CreateVolume: async () => {
          const res = await c.Controller.CreateVolume({ name: `spawns-${r}`, capacity_range: { required_bytes: String(320 << 20) }, volume_capabilities: [cap], parameters: vg ? { backend: 'lvm', volumeGroup: vg.vg } : {} });
          id = res.volume.volume_id as string;
        },
        NodeStageVolume: () => c.Node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap }),
        NodePublishVolume: () => c.Node.NodePublishVolume({ volume_id: id, staging_target_path: staging, target_path: target, volume_capability: cap }),
        NodeUnpublishVolume: () => c.Node.NodeUnpublishVolume({ volume_id: id, target_path: target }),
        NodeUnstageVolume: () => c.Node.NodeUnstageVolume({ volume_id: id, staging_target_path: staging }),
        'NodeStageVolume again': () => calls.NodeStageVolume(),
        'NodeUnstageVolume again': () => calls.NodeUnstageVolume(),
        DeleteVolume: () => c.Controller.DeleteVolume({ volume_id: id }),
      };
      const cpu0 = readCpu(proc.pid)!.self;
      for (const s of STEPS) {
        const before = await toolCounts(port);
        await calls[s]();
        const d = diff(before, await toolCounts(port));
        const acc = per.get(s)!;
        for (const [k, v] of d) acc.set(k, (acc.get(k) ?? 0) + v);
      }
      // The scrapes' own CPU is in here too; it is the same for every build measured.
      cpu += readCpu(proc.pid)!.self - cpu0;
    }
    for (const conc of values.timed ? values.timed.split(',').map(Number) : []) {
      const cpu1 = readCpu(proc.pid)!.self;
      const t = await timedLifecycles(c, work, cap, vg ? { backend: 'lvm', volumeGroup: vg.vg } : {}, conc, Number(values['timed-ops']));
      const cpuPer = ((readCpu(proc.pid)!.self - cpu1) / t.length) * 1000;
      console.log(`lifecycle (64 MiB ${fsType}, create..delete) c=${conc}, ${t.length} ops: p50 ${percentile(t, 50).toFixed(0)} ms, p90 ${percentile(t, 90).toFixed(0)} ms; driver CPU ${cpuPer.toFixed(0)} ms per lifecycle; load ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}`);
    }
    c.close();
    console.log(`backend ${backend}, ${rounds} lifecycles (320 MiB ${fsType} volume), host tools per RPC (mean):`);
    console.log('| RPC | tools | count |\n|---|---|---|');
    let total = 0;
    for (const s of STEPS) {
      const m = per.get(s)!;
      const n = [...m.values()].reduce((a, b) => a + b, 0) / rounds;
      total += n;
      console.log(`| ${s} | ${[...m].map(([k, v]) => `${k}${v / rounds === 1 ? '' : ` x${mean(v / rounds)}`}`).join(', ') || '—'} | ${mean(n)} |`);
    }
    console.log(`| whole lifecycle | | ${mean(total)} |`);
    console.log(`driver CPU (utime+stime, children excluded) per lifecycle: ${((cpu / rounds) * 1000).toFixed(0)} ms; load ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}`);
    proc.kill();
    await exited;
  } finally {
    if (proc.pid) proc.kill();
    await cleanupDir(dir).catch((e: unknown) => console.error(`cleanup: ${String(e)}`));
    if (vg) await execa('losetup', ['-d', vg.pv], { reject: false });
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack : String(err));
  process.exitCode = 1;
});
