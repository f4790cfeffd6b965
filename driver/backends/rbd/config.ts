// The RBD backend's configuration file (JSON) and the validation of every name that may
// reach the rbd/rados/ceph CLIs: pools, namespaces, features, users and keys all pass
// allow-lists or strict regexes, so no value can be taken for an option or a path.
import fs from 'node:fs/promises';
import { BackendError } from '../backend.js';

export const MAPPERS = ['krbd', 'rbd-nbd', 'fuse'] as const;
export type MapperName = (typeof MAPPERS)[number];

/** Image features a StorageClass may ask for (`imageFeatures`), in rbd's own names. */
export const IMAGE_FEATURES = ['layering', 'exclusive-lock', 'object-map', 'fast-diff', 'deep-flatten'] as const;
/** layering for clones, deep-flatten so flattening a clone also frees its snapshots from the parent. */
export const DEFAULT_IMAGE_FEATURES = 'layering,deep-flatten';

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/;
const CLUSTER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const USER_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
// A cephx key is base64 of a 28-byte blob (40 characters); allow some slack, nothing else.
const KEY_RE = /^[A-Za-z0-9+/]{16,200}={0,2}$/;
const MON_RE = /^(?:v[12]:)?(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]|[A-Za-z0-9][A-Za-z0-9.-]{0,252})(?::\d{1,5})?$/;
export const NODE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;
const MAP_OPTION_RE = /^[a-z0-9_]+(=[A-Za-z0-9_.-]+)?$/;

export interface PoolRef {
  pool: string;
  /** '' = the pool's default namespace. */
  namespace: string;
}

export interface ClusterConfig {
  clusterID: string;
  monitors: string[];
  /** The only pools (and pool/namespace pairs) the driver touches; the first is the default. */
  pools: PoolRef[];
  /** Default cephx credentials, used when a request carries no secrets (and for reads, which never do). */
  user?: string;
  keyFile?: string;
}

export interface RbdConfig {
  clusters: ClusterConfig[];
  mapper: MapperName;
  /** Clones deeper than this are flattened when they are made. */
  maxCloneDepth: number;
  /** Node IDs always known to reach every cluster (besides those registered in RADOS). */
  nodes: string[];
  imageFeatures: string;
  /** krbd/rbd-nbd map options (`rbd device map -o`), e.g. ms_mode=prefer-crc. */
  mapOptions: string[];
}

export function invalid(msg: string): BackendError {
  return new BackendError('invalid', msg);
}

export function checkName(what: string, v: string): string {
  if (!NAME_RE.test(v)) throw invalid(`${what} ${JSON.stringify(v.slice(0, 100))} is not valid: letters, digits, '_', '.', '-', at most 100, not starting with a symbol`);
  return v;
}

export function parseFeatures(raw: string): string[] {
  const list = raw.split(',').map((s) => s.trim()).filter(Boolean);
  if (list.length === 0) throw invalid('imageFeatures must name at least one feature');
  for (const f of list) {
    if (!(IMAGE_FEATURES as readonly string[]).includes(f)) throw invalid(`image feature ${JSON.stringify(f.slice(0, 40))} is not supported; allowed: ${IMAGE_FEATURES.join(', ')}`);
  }
  const has = (f: string) => list.includes(f);
  if (!has('layering')) throw invalid('imageFeatures must include layering (snapshots and clones need it)');
  if (has('object-map') && !has('exclusive-lock')) throw invalid('image feature object-map needs exclusive-lock');
  if (has('fast-diff') && !has('object-map')) throw invalid('image feature fast-diff needs object-map');
  return [...new Set(list)];
}

export function checkUser(v: string): string {
  if (!USER_RE.test(v)) throw invalid('the cephx user ID is not valid: letters, digits, "_", ".", "-" only');
  return v.startsWith('client.') ? v.slice('client.'.length) : v;
}

/** Never echoes the key itself. */
export function checkKey(v: string): string {
  const k = v.trim();
  if (!KEY_RE.test(k)) throw invalid('the cephx key is not valid base64 (the key itself is not shown)');
  return k;
}

function parsePoolRef(s: unknown, where: string): PoolRef {
  if (typeof s !== 'string') throw new Error(`${where}: a pool is a string "pool" or "pool/namespace"`);
  const parts = s.split('/');
  if (parts.length > 2) throw new Error(`${where}: ${JSON.stringify(s)} is not "pool" or "pool/namespace"`);
  try {
    return { pool: checkName('pool', parts[0]), namespace: parts[1] === undefined ? '' : checkName('namespace', parts[1]) };
  } catch (err) {
    throw new Error(`${where}: ${(err as Error).message}`, { cause: err });
  }
}

/** Reads and checks the config file; every mistake is reported with where it is. */
export async function loadConfig(file: string, overrides: { mapper?: string } = {}): Promise<RbdConfig> {
  const raw = JSON.parse(await fs.readFile(file, 'utf8')) as Record<string, unknown>;
  return parseConfig(raw, overrides, file);
}

export function parseConfig(raw: Record<string, unknown>, overrides: { mapper?: string } = {}, file = 'rbd config'): RbdConfig {
  const clustersRaw = raw.clusters;
  if (!Array.isArray(clustersRaw) || clustersRaw.length === 0) throw new Error(`${file}: "clusters" must list at least one cluster`);
  const clusters: ClusterConfig[] = clustersRaw.map((c: Record<string, unknown>, i: number) => {
    const where = `${file}: clusters[${i}]`;
    if (typeof c.clusterID !== 'string' || !CLUSTER_ID_RE.test(c.clusterID)) throw new Error(`${where}.clusterID must be a simple name`);
    if (!Array.isArray(c.monitors) || c.monitors.length === 0) throw new Error(`${where}.monitors must list at least one monitor`);
    for (const m of c.monitors) if (typeof m !== 'string' || !MON_RE.test(m)) throw new Error(`${where}.monitors: ${JSON.stringify(m)} is not host[:port]`);
    if (!Array.isArray(c.pools) || c.pools.length === 0) throw new Error(`${where}.pools must list at least one pool (or pool/namespace)`);
    const pools = c.pools.map((p, j) => parsePoolRef(p, `${where}.pools[${j}]`));
    let user: string | undefined;
    if (c.user !== undefined) {
      if (typeof c.user !== 'string' || !USER_RE.test(c.user)) throw new Error(`${where}.user is not a valid cephx user`);
      user = checkUser(c.user);
    }
    if (c.keyFile !== undefined && (typeof c.keyFile !== 'string' || !c.keyFile.startsWith('/'))) throw new Error(`${where}.keyFile must be an absolute path`);
    if ((user === undefined) !== (c.keyFile === undefined)) throw new Error(`${where}: user and keyFile go together`);
    return { clusterID: c.clusterID, monitors: c.monitors as string[], pools, user, keyFile: c.keyFile as string | undefined };
  });
  const ids = new Set<string>();
  for (const c of clusters) {
    if (ids.has(c.clusterID)) throw new Error(`${file}: clusterID ${c.clusterID} appears twice`);
    ids.add(c.clusterID);
  }
  const mapper = overrides.mapper ?? (raw.mapper as string | undefined) ?? 'krbd';
  if (!(MAPPERS as readonly string[]).includes(mapper)) throw new Error(`rbd mapper must be one of ${MAPPERS.join(', ')}, not ${JSON.stringify(mapper)}`);
  const depth = raw.maxCloneDepth ?? 4;
  if (typeof depth !== 'number' || !Number.isInteger(depth) || depth < 1 || depth > 15) throw new Error(`${file}: maxCloneDepth must be a whole number from 1 to 15`);
  const nodes = (raw.nodes ?? []) as unknown[];
  if (!Array.isArray(nodes) || nodes.some((n) => typeof n !== 'string' || !NODE_ID_RE.test(n))) throw new Error(`${file}: nodes must be a list of node IDs`);
  const features = typeof raw.imageFeatures === 'string' ? raw.imageFeatures : DEFAULT_IMAGE_FEATURES;
  parseFeatures(features);
  const mapOptions = (raw.mapOptions ?? []) as unknown[];
  if (!Array.isArray(mapOptions) || mapOptions.some((o) => typeof o !== 'string' || !MAP_OPTION_RE.test(o))) throw new Error(`${file}: mapOptions must be a list of key[=value] options`);
  return { clusters, mapper: mapper as MapperName, maxCloneDepth: depth, nodes: nodes as string[], imageFeatures: features, mapOptions: mapOptions as string[] };
}
