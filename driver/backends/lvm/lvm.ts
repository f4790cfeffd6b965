// lvm2, driven through its JSON reports. Every command runs with the driver's own
// configuration (LVM_SYSTEM_DIR): a device filter limited to the volume groups' PVs (so
// hundreds of loop devices are never scanned), no archive churn, and, where the kernel has
// no device-mapper, activation off.
import fs from 'node:fs/promises';
import path from 'node:path';
import { run, CommandError, type RunResult } from '../../host/exec.js';
import { metadataStates } from './mda.js';

export interface LvInfo {
  vg: string;
  name: string;
  sizeBytes: bigint;
  tags: string[];
  attr: string;
  poolLv: string;
  /** Single-segment placement: the PV and the first extent (nodm windows need it). */
  segments: Array<{ pv: string; startPe: number; sizePe: number }>;
  dataPercent: number | undefined;
  /** Thin pools: how full their metadata is. */
  metadataPercent: number | undefined;
}

export interface ThinPoolInfo {
  vg: string;
  name: string;
  dataBytes: bigint;
  /** Undefined: unknown. An inactive pool has no kernel state to read, and lvm prints "" for it. */
  dataPercent: number | undefined;
  metadataBytes: bigint;
  metadataPercent: number | undefined;
}

/** A percent column of an lvm report: "" (nothing to report, such as an inactive pool) is unknown, not 0. */
export function percentOf(v: string | undefined): number | undefined {
  if (v === undefined || v.trim() === '') return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

export interface VgInfo {
  name: string;
  extentBytes: bigint;
  freeBytes: bigint;
  sizeBytes: bigint;
}

/** What storage health needs of a VG: its size and free space, and the PVs it misses. */
export interface VgHealthInfo {
  name: string;
  freeBytes: bigint;
  sizeBytes: bigint;
  missingPvs: number;
  /** Where lvm last saw each missing PV (its device then), when it says. */
  missingPvNames: string[];
}

export interface PvInfo {
  name: string;
  vg: string;
  peStartBytes: bigint;
}

/** A PV as the start-up scan sees it: with its VG's system ID ('' for none), foreign VGs' included. */
export interface ScannedPv extends PvInfo {
  systemId: string;
}

type Report = { report: Array<Record<string, Array<Record<string, string>>>> };

/** How lvm is run: the real `lvm` binary, or a recorder in unit tests. */
export type LvmRunner = (args: string[], env: Record<string, string>, timeoutMs: number) => Promise<RunResult>;

/** An lvm command waits on the VG lock behind other commands; beyond this it is taken as hung. */
const LVM_COMMAND_TIMEOUT_MS = 120_000;

const realRunner: LvmRunner = (args, env, timeoutMs) => run('lvm', args, { env, timeoutMs });

/** The PVs' metadata commit state (see mda.ts); undefined: cannot tell, so no report is reused. */
export type MetadataStates = (devices: string[]) => Promise<string | undefined>;

/**
 * How long a report is reused while no metadata commit happened: what lvm shows that is not
 * in the metadata (activation, a thin pool's fill) is at most this old.
 */
export const REPORT_REUSE_MS = 5_000;
const READ_COMMANDS = new Set(['lvs', 'vgs', 'pvs']);

interface CachedReport {
  rows: Array<Record<string, string>>;
  at: number;
  states: string;
}

export class Lvm {
  readonly confDir: string;
  private devices: string[] = [];
  /**
   * Reports reused by their arguments (a lookup of one LV reads the whole report of its VGs).
   * The driver is the only writer of its VGs, and each of its writes drops them all; the PVs'
   * metadata headers are compared on every reuse as well, so a commit by anyone else (an
   * admin's lvchange, another process) is seen and the report read afresh.
   */
  private readonly reports = new Map<string, CachedReport>();
  /** Bumped as each write starts and ends: a report read across a write is not kept. */
  private generation = 0;
  private writing = 0;

  constructor(
    stateDir: string,
    readonly deviceMapper: boolean,
    private readonly runner: LvmRunner = realRunner,
    /** This node's lvm system ID: VGs that carry another are foreign to lvm here (shared disks). */
    readonly systemId?: string,
    /** Tests with a recorded lvm have no PVs to read: no reuse unless they give one. */
    private readonly states: MetadataStates | undefined = runner === realRunner ? metadataStates : undefined,
  ) {
    this.confDir = path.join(stateDir, 'lvm-conf');
  }

  /** Writes the configuration, accepting exactly these PV devices. */
  async configure(devices: string[]): Promise<void> {
    this.devices = [...new Set(devices)].sort();
    this.reports.clear();
    const filter = [...this.devices.map((d) => `"a|^${d.replace(/[|"\\]/g, '')}$|"`), '"r|.*|"'].join(', ');
    const conf = [
      `global { activation = ${this.deviceMapper ? 1 : 0}${this.systemId ? ' system_id_source = "lvmlocal"' : ''} }`,
      ...(this.systemId ? [`local { system_id = "${this.systemId}" }`] : []),
      `devices { filter = [ ${filter} ] global_filter = [ ${filter} ] use_devicesfile = 0 obtain_device_list_from_udev = 0 }`,
      `backup { backup = ${this.deviceMapper ? 1 : 0} archive = 0 }`,
      `activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }`,
      '',
    ].join('\n');
    await fs.mkdir(this.confDir, { recursive: true, mode: 0o700 });
    const file = path.join(this.confDir, 'lvm.conf');
    await fs.writeFile(`${file}.tmp`, conf, { mode: 0o600 });
    await fs.rename(`${file}.tmp`, file);
  }

  async run(args: string[], timeoutMs = LVM_COMMAND_TIMEOUT_MS): Promise<RunResult> {
    if (READ_COMMANDS.has(args[0])) return this.runner(args, { LVM_SYSTEM_DIR: this.confDir, LVM_SUPPRESS_FD_WARNINGS: '1' }, timeoutMs);
    // Anything else may commit metadata or change activation: no report read before it is reused.
    this.writing++;
    this.generation++;
    this.reports.clear();
    try {
      return await this.runner(args, { LVM_SYSTEM_DIR: this.confDir, LVM_SUPPRESS_FD_WARNINGS: '1' }, timeoutMs);
    } finally {
      this.writing--;
      this.generation++;
      this.reports.clear();
    }
  }

  private async report(args: string[], key: string): Promise<Array<Record<string, string>>> {
    const cacheKey = `${key} ${args.join(' ')}`;
    const states = this.states && this.writing === 0 ? await this.states(this.devices) : undefined;
    const hit = this.reports.get(cacheKey);
    if (hit && states !== undefined && hit.states === states && performance.now() - hit.at < REPORT_REUSE_MS) return hit.rows;
    const gen = this.generation;
    const r = await this.run([...args, '--reportformat', 'json', '--units', 'b', '--nosuffix']);
    const j = JSON.parse(r.stdout) as Report;
    const rows = j.report.flatMap((x) => x[key] ?? []);
    // Read before the report ran: a commit racing with the report makes the next reuse miss.
    if (states !== undefined && gen === this.generation && this.writing === 0) this.reports.set(cacheKey, { rows, at: performance.now(), states });
    return rows;
  }

  /**
   * Every PV the system shows (used once at start to find the volume groups' devices), also
   * those of VGs with a system ID (foreign to a host without it), so start-up can say so.
   */
  static async scanPvs(): Promise<ScannedPv[]> {
    const r = await run('lvm', ['pvs', '--foreign', '--reportformat', 'json', '--units', 'b', '--nosuffix', '-o', 'pv_name,vg_name,pe_start,vg_systemid'], {
      env: { LVM_SUPPRESS_FD_WARNINGS: '1' },
    });
    const j = JSON.parse(r.stdout) as Report;
    return j.report.flatMap((x) => x.pv ?? []).map((p) => ({ name: p.pv_name, vg: p.vg_name, peStartBytes: BigInt(p.pe_start), systemId: p.vg_systemid ?? '' }));
  }

  async pvs(vgs: string[]): Promise<PvInfo[]> {
    const rows = await this.report(['pvs', '-o', 'pv_name,vg_name,pe_start', ...this.devices], 'pv');
    return rows.filter((p) => vgs.includes(p.vg_name)).map((p) => ({ name: p.pv_name, vg: p.vg_name, peStartBytes: BigInt(p.pe_start) }));
  }

  async vgs(vgs: string[]): Promise<VgInfo[]> {
    if (vgs.length === 0) return [];
    const rows = await this.report(['vgs', '-o', 'vg_name,vg_extent_size,vg_free,vg_size', ...vgs], 'vg');
    return rows.map((v) => ({ name: v.vg_name, extentBytes: BigInt(v.vg_extent_size), freeBytes: BigInt(v.vg_free), sizeBytes: BigInt(v.vg_size) }));
  }

  /**
   * The named VGs that exist, and those lvm says do not. Any other failure of vgs (locking,
   * a broken PV, a timeout) is thrown as it is: "could not look" must not read as "not there".
   */
  async vgsOrMissing(vgs: string[]): Promise<{ found: VgInfo[]; missing: string[] }> {
    const found: VgInfo[] = [];
    const missing: string[] = [];
    for (const vg of vgs) {
      try {
        found.push(...(await this.vgs([vg])));
      } catch (err) {
        if (err instanceof CommandError && err.stderr.includes(`Volume group "${vg}" not found`)) missing.push(vg);
        else throw err;
      }
    }
    return { found, missing };
  }

  /**
   * Size, free space and missing PVs of VGs that exist (vgsOrMissing tells the others). A
   * missing PV is a warning to lvm, not a failure: the reports still come, with the PV as
   * "[unknown]", and its last device only in the warning.
   */
  async vgHealth(vgs: string[]): Promise<VgHealthInfo[]> {
    if (vgs.length === 0) return [];
    const r = await this.run(['vgs', '-o', 'vg_name,vg_free,vg_size,vg_missing_pv_count', '--reportformat', 'json', '--units', 'b', '--nosuffix', ...vgs]);
    const rows = (JSON.parse(r.stdout) as Report).report.flatMap((x) => x.vg ?? []);
    return rows.map((v) => {
      const lastSeen = [...r.stderr.matchAll(/VG (\S+) is missing PV \S+ \(last written to ([^)\s]+)\)/g)].filter((m) => m[1] === v.vg_name).map((m) => m[2]);
      return { name: v.vg_name, freeBytes: BigInt(v.vg_free), sizeBytes: BigInt(v.vg_size), missingPvs: Number(v.vg_missing_pv_count || 0), missingPvNames: lastSeen };
    });
  }

  /** Free extents per PV as contiguous runs (what a contiguous LV can use). */
  async freeRuns(vg: string): Promise<Array<{ pv: string; start: number; size: number }>> {
    const rows = await this.report(['pvs', '--segments', '-o', 'pv_name,vg_name,pvseg_start,pvseg_size,lv_name', ...this.devices], 'pvseg');
    return rows.filter((r) => r.vg_name === vg && r.lv_name === '').map((r) => ({ pv: r.pv_name, start: Number(r.pvseg_start), size: Number(r.pvseg_size) }));
  }

  /** The thin pools of these VGs: data and metadata sizes and how full each is (percent). */
  async thinPools(vgs: string[]): Promise<ThinPoolInfo[]> {
    if (vgs.length === 0) return [];
    const rows = await this.report(['lvs', '-S', 'segtype=thin-pool', '-o', 'vg_name,lv_name,lv_size,data_percent,lv_metadata_size,metadata_percent', ...vgs], 'lv');
    return rows.map((r) => ({
      vg: r.vg_name,
      name: r.lv_name,
      dataBytes: BigInt(r.lv_size),
      dataPercent: percentOf(r.data_percent),
      metadataBytes: BigInt(r.lv_metadata_size || 0),
      metadataPercent: percentOf(r.metadata_percent),
    }));
  }

  async lvs(vgs: string[], select?: string): Promise<LvInfo[]> {
    if (vgs.length === 0) return [];
    const args = ['lvs', '--segments', '-o', 'vg_name,lv_name,lv_size,lv_tags,lv_attr,pool_lv,seg_start_pe,seg_size_pe,seg_pe_ranges,data_percent,metadata_percent'];
    // One LV by name is picked from the whole report (one report to reuse for every lookup);
    // any other selection goes to lvm.
    const byLvName = select !== undefined && this.states ? /^lv_name=([A-Za-z0-9+_.-]+)$/.exec(select)?.[1] : undefined;
    if (select && byLvName === undefined) args.push('-S', select);
    const rows = (await this.report([...args, ...vgs], 'seg')).filter((r) => byLvName === undefined || r.lv_name === byLvName);
    const byName = new Map<string, LvInfo>();
    for (const r of rows) {
      const key = `${r.vg_name}/${r.lv_name}`;
      let lv = byName.get(key);
      if (!lv) {
        lv = {
          vg: r.vg_name,
          name: r.lv_name,
          sizeBytes: BigInt(r.lv_size),
          tags: r.lv_tags ? r.lv_tags.split(',') : [],
          attr: r.lv_attr,
          poolLv: r.pool_lv ?? '',
          segments: [],
          dataPercent: percentOf(r.data_percent),
          metadataPercent: percentOf(r.metadata_percent),
        };
        byName.set(key, lv);
      }
      // seg_pe_ranges: "/dev/loop0:0-24" (linear); empty for thin LVs.
      const m = /^(.+):(\d+)-(\d+)$/.exec(r.seg_pe_ranges ?? '');
      if (m) lv.segments.push({ pv: m[1], startPe: Number(m[2]), sizePe: Number(m[3]) - Number(m[2]) + 1 });
    }
    return [...byName.values()];
  }
}
