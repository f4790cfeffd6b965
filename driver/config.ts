// The driver's configuration in one place: every flag with its default and its help line,
// checked once into typed settings that createDriver builds from. main.ts, the in-process
// tests, the test harness, the demo and the bench all describe a driver with DriverOptions,
// so a flag's name, default and check exist once.
import os from 'node:os';
import path from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parseSize } from '../lib/size.js';
import { parseHostPort } from '../lib/http.js';
import { isSupportedFs } from './host/fs.js';
import { DEFAULT_PATH_ROOTS } from './host/paths.js';
import { MAPPERS, type MapperName } from './backends/rbd/config.js';
import type { DriverConfig } from './context.js';
import { DEFAULT_MAX_CONCURRENT_RPCS } from './server.js';
import { DEFAULT_MAX_CHILD_PROCESSES } from './host/exec.js';
import { DEFAULT_THIN_OVERPROVISION_RATIO } from './backends/lvm/index.js';

export const DRIVER_MODES = ['all', 'controller', 'node'] as const;
export type DriverMode = (typeof DRIVER_MODES)[number];
export const LVM_MODES = ['auto', 'dm', 'nodm'] as const;
export type LvmMode = (typeof LVM_MODES)[number];

/** A size as a flag gives it ("20Gi") or in bytes. */
export type SizeValue = string | bigint;
/** A whole number as a flag gives it ("16") or as a number. */
export type CountValue = string | number;

/**
 * A driver as a caller describes it: one field per flag (the flag's name in camelCase),
 * unset meaning the flag's default. Text is accepted where a flag gives text.
 */
export interface DriverOptions {
  endpoint?: string;
  mode?: string;
  driverName?: string;
  nodeId?: string;
  topologyKey?: string;
  dataDir?: string;
  dataPoolSize?: SizeValue;
  capacity?: SizeValue;
  maxVolumeSize?: SizeValue;
  stateDir?: string;
  maxVolumesPerNode?: CountValue;
  /** Repeatable flag: each entry is one --allowed-path-root. */
  allowedPathRoot?: string[];
  lvmVolumeGroups?: string;
  lvmDevices?: string;
  lvmMode?: string;
  lvmSystemId?: string;
  lvmThinOverprovision?: string | number;
  rbdConfig?: string;
  rbdMapper?: string;
  defaultBackend?: string;
  defaultFsType?: string;
  defaultVolumeSize?: SizeValue;
  maxConcurrentRpcs?: CountValue;
  maxChildProcesses?: CountValue;
  metricsAddress?: string;
  metricsSharedBackends?: string | boolean;
  logLevel?: string;
}

interface FlagSpec {
  arg: string;
  help: string;
  /** The default as the flag would spell it; defaultText when it depends on the host or other flags. */
  default?: string;
  defaultText?: string;
}

/** Every flag, in --help order. The flag's name is its key in kebab case. */
const FLAGS: { [K in keyof Required<DriverOptions>]: FlagSpec } = {
  endpoint: { arg: 'unix:///path', help: 'socket to serve on', default: 'unix:///run/tscsi/csi.sock' },
  mode: { arg: DRIVER_MODES.join('|'), help: 'which services to serve', default: 'all' },
  driverName: { arg: 'NAME', help: 'CSI driver name', default: 'csi.tscsi.dev' },
  nodeId: { arg: 'ID', help: "this node's ID", defaultText: 'the host name' },
  topologyKey: { arg: 'KEY', help: 'topology segment key', default: 'topology.tscsi.dev/node' },
  dataDir: { arg: 'DIR', help: 'loop backend: volume files; given in controller mode, it also enables the loop backend there', default: '/var/lib/tscsi/loop' },
  dataPoolSize: { arg: 'SIZE', help: 'loop backend: keep DIR on an XFS image of SIZE (reflink snapshots on ext4 hosts)' },
  capacity: { arg: 'SIZE', help: 'loop backend: most it provisions in all', defaultText: "DIR's filesystem size" },
  maxVolumeSize: { arg: 'SIZE', help: 'largest single volume', default: '16Ti' },
  stateDir: { arg: 'DIR', help: 'node state', default: '/var/lib/tscsi/node' },
  maxVolumesPerNode: { arg: 'N', help: 'attach limit reported by NodeGetInfo; 0 = none', default: '256' },
  allowedPathRoot: { arg: 'DIR', help: 'node service: stage and publish only below DIR (repeatable)', default: DEFAULT_PATH_ROOTS.join(' ') },
  lvmVolumeGroups: { arg: 'VG[,VG]', help: 'enable the lvm backend on these volume groups (the only ones it touches)' },
  lvmDevices: { arg: 'DEV[,DEV]', help: 'their physical volumes', defaultText: 'found by one scan at start' },
  lvmMode: { arg: LVM_MODES.join('|'), help: 'device-mapper or loop windows over the PVs (auto: /proc/misc)', default: 'auto' },
  lvmSystemId: { arg: 'ID', help: "this node's lvm system ID (vgcreate --systemid): on disks several nodes see, VGs with another node's ID stay foreign to it", defaultText: 'none (VGs without a system ID only)' },
  lvmThinOverprovision: { arg: 'N', help: 'thin pools may promise N x their size', default: String(DEFAULT_THIN_OVERPROVISION_RATIO) },
  rbdConfig: { arg: 'FILE', help: 'enable the rbd backend: Ceph clusters, allowed pools, default cephx user (JSON)' },
  rbdMapper: { arg: MAPPERS.join('|'), help: 'how node plugins map RBD images', defaultText: "the config's, else krbd" },
  defaultBackend: { arg: 'NAME', help: 'backend when a StorageClass does not say', defaultText: 'loop when it is enabled, else the only enabled backend' },
  defaultFsType: { arg: 'TYPE', help: 'ext4, xfs or btrfs', default: 'ext4' },
  defaultVolumeSize: { arg: 'SIZE', help: 'when CreateVolume gives no capacity', default: '1Gi' },
  maxConcurrentRpcs: { arg: 'N', help: 'Controller/Node calls served at once; more get UNAVAILABLE; 0 = no cap', default: String(DEFAULT_MAX_CONCURRENT_RPCS) },
  maxChildProcesses: { arg: 'N', help: 'host tools (mkfs, cp, rbd, ...) run at once; more wait their turn', default: String(DEFAULT_MAX_CHILD_PROCESSES) },
  metricsAddress: { arg: 'HOST:PORT', help: 'serve Prometheus metrics on http://HOST:PORT/metrics (":9810": every interface)', defaultText: 'off' },
  metricsSharedBackends: {
    arg: 'true|false',
    help: "metrics: also report shared backends' (rbd) pools, volumes and snapshots; one driver in the cluster should (they are the same from every node)",
    defaultText: 'true with --mode controller, else false',
  },
  logLevel: { arg: 'LEVEL', help: 'pino level', defaultText: '$LOG_LEVEL, else info' },
};

const flagName = (key: string) => key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
const optionKeys = Object.keys(FLAGS) as Array<keyof DriverOptions>;

export const USAGE =
  'tscsi-driver: a CSI driver (spec v1.12) with loop, LVM and Ceph RBD backends\n\n' +
  optionKeys
    .map((k) => {
      const f = FLAGS[k];
      const dflt = f.default !== undefined ? ` (default ${f.default})` : f.defaultText ? ` (default: ${f.defaultText})` : '';
      return `  ${`--${flagName(k)} ${f.arg}`.padEnd(31)} ${f.help}${dflt}\n`;
    })
    .join('');

/** The typed, checked configuration: the services' part (DriverConfig) and how to run and which backends to build. */
export interface DriverSettings extends DriverConfig {
  endpoint: string;
  mode: DriverMode;
  logLevel: string;
  maxVolumeBytes: bigint;
  allowedPathRoots: string[];
  maxConcurrentRpcs: number;
  maxChildProcesses: number;
  /** Where /metrics is served; absent: no metrics. */
  metricsAddress?: string;
  /** Whether the metrics read shared backends' (rbd) pools and counts, or only node-local ones. */
  metricsSharedBackends: boolean;
  /** Absent: this driver has no loop backend. */
  loop?: { dataDir: string; dataPoolBytes?: bigint; capacityBytes?: bigint };
  lvm?: { volumeGroups: string[]; devices?: string[]; mode: LvmMode; thinOverprovisionRatio: number; systemId?: string };
  rbd?: { configFile: string; mapper?: MapperName };
}

/** A configuration a person must correct; the message lists every problem, each naming its flag. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.length === 1 ? problems[0] : `${problems.length} problems:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
  }
}

/**
 * Reads each value once, remembering what is wrong with it; after all are read, one
 * ConfigError names every problem, so a person fixes a manifest in one go.
 */
class Reader {
  readonly problems: string[] = [];
  constructor(private readonly opts: DriverOptions) {}

  given(k: keyof DriverOptions): boolean {
    return this.opts[k] !== undefined;
  }

  text(k: keyof DriverOptions): string {
    const v = this.opts[k] ?? FLAGS[k].default;
    if (v === undefined) throw new Error(`no default for --${flagName(k)}`); // a programming error, not a user's
    const s = String(v);
    if (!s.trim()) this.problems.push(`--${flagName(k)} must not be empty`);
    return s;
  }

  oneOf<T extends string>(k: keyof DriverOptions, allowed: readonly T[]): T {
    const v = this.text(k);
    if (!(allowed as readonly string[]).includes(v)) this.problems.push(`--${flagName(k)} must be one of ${allowed.join(', ')}; got ${JSON.stringify(v)}`);
    return v as T;
  }

  count(k: keyof DriverOptions, min: number): number {
    const raw = this.text(k);
    const n = /^\d+$/.test(raw.trim()) ? Number(raw) : NaN;
    if (!Number.isSafeInteger(n) || n < min) this.problems.push(`--${flagName(k)} must be a whole number of at least ${min}; got ${JSON.stringify(raw)}`);
    return n;
  }

  /** A positive number, fractions allowed. */
  ratio(k: keyof DriverOptions): number {
    const raw = this.text(k);
    const n = /^\d+(\.\d+)?$/.test(raw.trim()) ? Number(raw) : NaN;
    if (!(n > 0)) this.problems.push(`--${flagName(k)} must be a number above 0 (such as 10 or 1.5); got ${JSON.stringify(raw)}`);
    return n;
  }

  size(k: keyof DriverOptions, min = 1n): bigint {
    const v = this.opts[k] ?? FLAGS[k].default;
    try {
      const b = typeof v === 'bigint' ? v : parseSize(String(v));
      if (b < min) this.problems.push(`--${flagName(k)} must be at least ${min} bytes; got ${String(v)}`);
      return b;
    } catch (err) {
      this.problems.push(`--${flagName(k)}: ${err instanceof Error ? err.message : String(err)}`);
      return 0n;
    }
  }

  optionalSize(k: keyof DriverOptions): bigint | undefined {
    return this.given(k) ? this.size(k) : undefined;
  }

  list(k: keyof DriverOptions): string[] | undefined {
    const v = this.opts[k];
    return v === undefined ? undefined : String(v).split(',').map((s) => s.trim()).filter(Boolean);
  }
}

/** --lvm-system-id, checked: it goes into the driver's lvm.conf as a quoted string. */
function lvmSystemId(r: Reader): string | undefined {
  if (!r.given('lvmSystemId')) return undefined;
  const id = r.text('lvmSystemId');
  if (!/^[A-Za-z0-9][A-Za-z0-9.+_-]{0,127}$/.test(id)) r.problems.push(`--lvm-system-id must be 1-128 letters, digits and . + _ - (lvm's system ID characters), starting with a letter or digit; got ${JSON.stringify(id.slice(0, 140))}`);
  return id;
}

/**
 * The loop backend serves node-local volumes, so a node plugin has it; a controller-only
 * driver (the central RBD Deployment) has it only when a loop flag asks for it.
 */
function loopWanted(r: Reader, mode: DriverMode): boolean {
  return mode !== 'controller' || r.given('dataDir') || r.given('dataPoolSize') || r.given('capacity');
}

function backendSettings(r: Reader, mode: DriverMode): Pick<DriverSettings, 'loop' | 'lvm' | 'rbd'> {
  const out: Pick<DriverSettings, 'loop' | 'lvm' | 'rbd'> = {};
  if (loopWanted(r, mode)) {
    const dataDir = r.text('dataDir');
    if (!path.isAbsolute(dataDir)) r.problems.push(`--data-dir must be an absolute path; got ${JSON.stringify(dataDir)}`);
    out.loop = { dataDir, dataPoolBytes: r.optionalSize('dataPoolSize'), capacityBytes: r.optionalSize('capacity') };
  }
  const groups = r.list('lvmVolumeGroups');
  if (groups !== undefined) {
    if (groups.length === 0) r.problems.push('--lvm-volume-groups must name at least one volume group');
    const ratio = r.ratio('lvmThinOverprovision');
    out.lvm = { volumeGroups: groups, devices: r.list('lvmDevices'), mode: r.oneOf('lvmMode', LVM_MODES), thinOverprovisionRatio: ratio, systemId: lvmSystemId(r) };
  } else {
    for (const k of ['lvmDevices', 'lvmMode', 'lvmThinOverprovision', 'lvmSystemId'] as const) {
      if (r.given(k)) r.problems.push(`--${flagName(k)} needs --lvm-volume-groups (the lvm backend is off without it)`);
    }
  }
  if (r.given('rbdConfig')) {
    out.rbd = { configFile: r.text('rbdConfig'), mapper: r.given('rbdMapper') ? r.oneOf('rbdMapper', MAPPERS) : undefined };
  } else if (r.given('rbdMapper')) {
    r.problems.push('--rbd-mapper needs --rbd-config (the rbd backend is off without it)');
  }
  return out;
}

/** Names of the backends these settings build, in a fixed order. */
export function enabledBackends(s: Pick<DriverSettings, 'loop' | 'lvm' | 'rbd'>): string[] {
  return (['loop', 'lvm', 'rbd'] as const).filter((k) => s[k] !== undefined);
}

function defaultBackendOf(r: Reader, enabled: string[]): string {
  if (r.given('defaultBackend')) {
    const b = r.text('defaultBackend');
    if (!enabled.includes(b)) r.problems.push(`--default-backend ${b} is not enabled; enabled: ${enabled.join(', ') || 'none'}`);
    return b;
  }
  if (enabled.includes('loop') || enabled.length === 1) return enabled[0];
  r.problems.push(
    enabled.length === 0
      ? 'no backend is enabled: give --data-dir, --lvm-volume-groups or --rbd-config'
      : `--default-backend is needed to choose among ${enabled.join(', ')}`,
  );
  return '';
}

function pathRootsOf(r: Reader, opts: DriverOptions): string[] {
  const roots = opts.allowedPathRoot?.length ? opts.allowedPathRoot : DEFAULT_PATH_ROOTS;
  for (const root of roots) {
    if (!path.isAbsolute(root) || path.normalize(root) === '/') r.problems.push(`--allowed-path-root ${root} must be an absolute directory other than /`);
  }
  return [...roots];
}

function metricsAddressOf(r: Reader): string | undefined {
  if (!r.given('metricsAddress')) return undefined;
  const a = r.text('metricsAddress');
  try {
    parseHostPort(a);
  } catch (err) {
    r.problems.push(`--metrics-address: ${err instanceof Error ? err.message : String(err)}`);
  }
  return a;
}

/** The package's version, found from the sources (driver/) and from the build (dist/driver/) alike. */
export function packageVersion(): string {
  for (let d = import.meta.dirname; d !== path.dirname(d); d = path.dirname(d)) {
    const file = path.join(d, 'package.json');
    if (existsSync(file)) return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
  }
  return 'unknown';
}

export interface ResolveContext {
  env?: NodeJS.ProcessEnv;
  /** Tests: the kinds of the backends the caller hands createDriver itself (default: those the options enable). */
  backendNames?: string[];
}

/** Checks every option once and fills in the defaults; throws a ConfigError naming every problem. */
export function resolveSettings(opts: DriverOptions = {}, { env = process.env, backendNames }: ResolveContext = {}): DriverSettings {
  const known = new Set<string>(optionKeys);
  const unknown = Object.keys(opts).filter((k) => !known.has(k));
  if (unknown.length) throw new ConfigError(unknown.map((k) => `unknown option ${k}`));
  const r = new Reader(opts);
  const mode = r.oneOf('mode', DRIVER_MODES);
  const fsType = r.text('defaultFsType');
  if (!isSupportedFs(fsType)) r.problems.push(`--default-fs-type must be ext4, xfs or btrfs; got ${JSON.stringify(fsType)}`);
  const backends = backendSettings(r, mode);
  // Backends a caller brings itself replace the configured ones: describe only those kept.
  for (const k of ['loop', 'lvm', 'rbd'] as const) if (backendNames && !backendNames.includes(k)) delete backends[k];
  const settings: DriverSettings = {
    endpoint: r.text('endpoint'),
    mode,
    logLevel: opts.logLevel ?? env.LOG_LEVEL ?? 'info',
    driverName: r.text('driverName'),
    version: packageVersion(),
    nodeId: opts.nodeId ?? os.hostname(),
    topologyKey: r.text('topologyKey'),
    maxVolumesPerNode: r.count('maxVolumesPerNode', 0),
    defaultFsType: fsType as DriverSettings['defaultFsType'],
    defaultBackend: defaultBackendOf(r, backendNames ?? enabledBackends(backends)),
    nodeStateDir: r.text('stateDir'),
    defaultVolumeBytes: r.size('defaultVolumeSize'),
    maxVolumeBytes: r.size('maxVolumeSize'),
    allowedPathRoots: pathRootsOf(r, opts),
    maxConcurrentRpcs: r.count('maxConcurrentRpcs', 0),
    maxChildProcesses: r.count('maxChildProcesses', 1),
    metricsAddress: metricsAddressOf(r),
    metricsSharedBackends: r.given('metricsSharedBackends') ? r.oneOf('metricsSharedBackends', ['true', 'false']) === 'true' : mode !== 'node',
    ...backends,
  };
  if (!path.isAbsolute(settings.nodeStateDir)) r.problems.push(`--state-dir must be an absolute path; got ${JSON.stringify(settings.nodeStateDir)}`);
  if (r.problems.length) throw new ConfigError(r.problems);
  return settings;
}

/** The options a command line gives (flags not given stay unset), or 'help'. */
export function optionsFromArgv(argv: string[]): DriverOptions | 'help' {
  const spec: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = { help: { type: 'boolean' } };
  for (const k of optionKeys) spec[flagName(k)] = { type: 'string', multiple: k === 'allowedPathRoot' };
  let values: Record<string, unknown>;
  try {
    values = parseArgs({ args: argv, options: spec, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new ConfigError([`${err instanceof Error ? err.message : String(err)} (see --help)`]);
  }
  if (values.help) return 'help';
  const opts: Record<string, unknown> = {};
  for (const k of optionKeys) if (values[flagName(k)] !== undefined) opts[k] = values[flagName(k)];
  return opts as DriverOptions;
}

/** The command line that gives these options: for starting the driver as a process (harness, demo, bench). */
export function optionsToArgv(opts: DriverOptions): string[] {
  const out: string[] = [];
  for (const k of optionKeys) {
    const v = opts[k];
    if (v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) out.push(`--${flagName(k)}`, String(one));
  }
  return out;
}
