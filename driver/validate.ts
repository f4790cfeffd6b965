// Every field of a request is hostile until checked here.
import { invalidArgument, outOfRange } from './errors.js';
import { isSupportedFs, SUPPORTED_FS, type FsType } from './host/fs.js';
import type { AccessType } from './backends/backend.js';

export const MAX_NAME_LENGTH = 128;
// The spec bans these control characters in names.
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const BANNED_CHARS = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]/;

/** The spec's general size limits: 128 bytes for a string, 4 KiB for a map. */
export const MAX_MAP_BYTES = 4096;
/** A map key or value longer than these is no label or parameter anyone writes. */
const MAX_MAP_KEY_CHARS = 256;
const MAX_MAP_VALUE_CHARS = 4096;
/** PATH_MAX: longer is no path the kernel takes. */
const MAX_PATH_CHARS = 4096;
/** One mount option ("commit=60", "logbsize=256k") is never longer. */
const MAX_MOUNT_FLAG_CHARS = 64;

// What a decoder leaves of bytes that are not UTF-8: U+FFFD (Node's Buffer decoding, which
// grpc-js uses) or lone surrogates (protobufjs's own decoder). Either way two different byte
// strings could become one name, and so one derived ID.
const NOT_UTF8 = /\uFFFD|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

export function checkName(name: string, field = 'name'): void {
  if (!name) throw invalidArgument(`${field} is required`);
  if (NOT_UTF8.test(name)) throw invalidArgument(`${field} is not valid UTF-8 (or contains U+FFFD): names must be UTF-8 strings`);
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > MAX_NAME_LENGTH) throw invalidArgument(`${field} is ${bytes} bytes long; the CSI limit is ${MAX_NAME_LENGTH} bytes`);
  if (BANNED_CHARS.test(name)) throw invalidArgument(`${field} contains a control character, which the CSI spec bans`);
}

export const INT64_MAX = (1n << 63n) - 1n;

export function parseBytes(v: string | number | undefined | null, field: string): bigint {
  if (v === undefined || v === null || v === '') return 0n;
  const s = String(v);
  if (!/^-?\d+$/.test(s)) throw invalidArgument(`${field} must be an integer number of bytes`);
  const n = BigInt(s);
  if (n < 0n) throw invalidArgument(`${field} must not be negative`);
  if (n > INT64_MAX) throw outOfRange(`${field} is larger than int64`);
  return n;
}

export interface CapRange {
  required: bigint;
  limit: bigint;
}

export function parseRange(r: { required_bytes?: string | number; limit_bytes?: string | number } | null | undefined): CapRange {
  const required = parseBytes(r?.required_bytes, 'capacity_range.required_bytes');
  const limit = parseBytes(r?.limit_bytes, 'capacity_range.limit_bytes');
  if (limit > 0n && required > limit) throw invalidArgument(`capacity_range.required_bytes (${required}) exceeds limit_bytes (${limit})`);
  return { required, limit };
}

export const ACCESS_MODES = [
  'SINGLE_NODE_WRITER',
  'SINGLE_NODE_READER_ONLY',
  'MULTI_NODE_READER_ONLY',
  'MULTI_NODE_SINGLE_WRITER',
  'MULTI_NODE_MULTI_WRITER',
  'SINGLE_NODE_SINGLE_WRITER',
  'SINGLE_NODE_MULTI_WRITER',
] as const;

export const SINGLE_NODE_MODES = new Set(['SINGLE_NODE_WRITER', 'SINGLE_NODE_READER_ONLY', 'SINGLE_NODE_SINGLE_WRITER', 'SINGLE_NODE_MULTI_WRITER']);
export const READ_ONLY_MODES = new Set(['SINGLE_NODE_READER_ONLY', 'MULTI_NODE_READER_ONLY']);

// Mount flags a pod's volume may carry. Anything else (exec, suid, dev, remount, options
// with '=' or ',' smuggling more options) is refused: these flags reach mount(8). Beyond the
// VFS flags every filesystem takes, each filesystem has its own: a flag of another one
// (data=journal on xfs, logbufs on ext4) is refused here instead of failing at mount.
/**
 * The flags of COMMON_FLAGS that belong to one mount rather than to the filesystem: a bind
 * mount (NodePublish, a re-made mount) can set them per target; the rest took effect when
 * the filesystem itself was mounted.
 */
export const PER_MOUNT_FLAGS: readonly string[] = ['nosuid', 'nodev', 'noexec', 'noatime', 'nodiratime', 'relatime'];
const COMMON_FLAGS = ['ro', 'rw', 'noatime', 'nodiratime', 'relatime', 'strictatime', 'lazytime', 'nolazytime', 'nosuid', 'nodev', 'noexec', 'sync', 'async', 'dirsync'];
const EXT_FLAGS = ['discard', 'nodiscard', 'nobarrier', 'barrier', 'noacl', 'acl', 'user_xattr', 'nouser_xattr'];
const FS_FLAGS: Record<FsType, string[]> = {
  ext4: EXT_FLAGS,
  ext3: EXT_FLAGS,
  xfs: ['discard', 'nodiscard', 'nouuid', 'inode64'],
  btrfs: ['discard', 'nodiscard', 'nobarrier', 'barrier', 'noacl', 'acl'],
};
const EXT_VALUES: Record<string, RegExp> = { commit: /^\d{1,5}$/, data: /^(ordered|writeback|journal)$/ };
const FS_FLAG_VALUES: Record<FsType, Record<string, RegExp>> = {
  ext4: EXT_VALUES,
  ext3: EXT_VALUES,
  xfs: { logbufs: /^\d{1,2}$/, logbsize: /^\d{1,3}k$/, allocsize: /^\d{1,4}[kmg]$/ },
  btrfs: {
    commit: /^\d{1,5}$/,
    compress: /^(zlib|lzo|zstd|no)(:\d{1,2})?$/,
    'compress-force': /^(zlib|lzo|zstd)(:\d{1,2})?$/,
    space_cache: /^v[12]$/,
  },
};
/** What any supported filesystem takes: the check while the filesystem is not known yet. */
const ANY_FLAGS = new Set([...COMMON_FLAGS, ...Object.values(FS_FLAGS).flat()]);
const ANY_FLAG_VALUES: Record<string, RegExp> = Object.assign({}, ...Object.values(FS_FLAG_VALUES));

// Mount flags MAY carry sensitive values (the spec says so), so a refusal names the flag
// by its position and option name only, never its value.
/** Checks mount flags, for `fsType` when known ('' = any supported filesystem). */
export function checkMountFlags(flags: string[], fsType = ''): void {
  const known = isSupportedFs(fsType);
  const plain = known ? new Set([...COMMON_FLAGS, ...FS_FLAGS[fsType]]) : ANY_FLAGS;
  const valued = known ? FS_FLAG_VALUES[fsType] : ANY_FLAG_VALUES;
  const forFs = known ? ` for ${fsType}` : '';
  flags.forEach((f, i) => {
    if (typeof f !== 'string' || f.length === 0 || f.length > MAX_MOUNT_FLAG_CHARS || /[\s,\0]/.test(f)) {
      throw invalidArgument(`mount flag #${i + 1} is not allowed: one option per entry, at most ${MAX_MOUNT_FLAG_CHARS} characters, no commas or spaces`);
    }
    const eq = f.indexOf('=');
    if (eq < 0) {
      if (!plain.has(f)) {
        throw invalidArgument(`mount flag #${i + 1} (${/^[a-z_]{1,20}$/.test(f) ? f : 'unnamed'}) is not allowed${forFs}; allowed: ${[...plain].join(', ')}, ${Object.keys(valued).map((k) => k + '=…').join(', ')}`);
      }
    } else {
      const key = f.slice(0, eq);
      const re = Object.hasOwn(valued, key) ? valued[key] : undefined;
      if (!re || !re.test(f.slice(eq + 1))) throw invalidArgument(`mount flag #${i + 1} (${Object.hasOwn(ANY_FLAG_VALUES, key) ? key + '=…' : 'an option with a value'}) is not allowed${forFs}`);
    }
  });
}

export function checkFsType(fsType: string): void {
  if (fsType && !isSupportedFs(fsType)) {
    throw invalidArgument(`fsType ${JSON.stringify(fsType.slice(0, 32))} is not supported; use one of ${SUPPORTED_FS.join(', ')}`);
  }
}

/** The shape proto-loader gives a VolumeCapability (oneof access_type as a discriminator). */
export interface Capability {
  block?: object | null;
  mount?: { fs_type?: string; mount_flags?: string[]; volume_mount_group?: string } | null;
  access_mode?: { mode?: string } | null;
  access_type?: string;
}

export interface CheckedCapability {
  accessType: AccessType;
  mode: string;
  fsType: string;
  mountFlags: string[];
}

export function checkCapability(cap: Capability | null | undefined, field = 'volume_capability'): CheckedCapability {
  if (!cap) throw invalidArgument(`${field} is required`);
  const accessType: AccessType | undefined = cap.block ? 'block' : cap.mount ? 'mount' : undefined;
  if (!accessType) throw invalidArgument(`${field}.access_type must be mount or block`);
  const mode = cap.access_mode?.mode ?? 'UNKNOWN';
  if (!(ACCESS_MODES as readonly string[]).includes(mode)) throw invalidArgument(`${field}.access_mode ${JSON.stringify(mode)} is not supported`);
  const fsType = cap.mount?.fs_type ?? '';
  const mountFlags = cap.mount?.mount_flags ?? [];
  if (accessType === 'mount') {
    checkFsType(fsType);
    checkMountFlags(mountFlags, fsType);
    if (cap.mount?.volume_mount_group) throw invalidArgument(`${field}.mount.volume_mount_group is not supported (no VOLUME_MOUNT_GROUP capability)`);
  }
  return { accessType, mode, fsType, mountFlags };
}

export function checkCapabilities(caps: Capability[] | null | undefined): CheckedCapability[] {
  if (!caps || caps.length === 0) throw invalidArgument('volume_capabilities is required');
  const checked = caps.map((c, i) => checkCapability(c, `volume_capabilities[${i}]`));
  if (new Set(checked.map((c) => c.accessType)).size > 1) throw invalidArgument('volume_capabilities mix block and mount access; a volume is one or the other');
  if (new Set(checked.map((c) => c.fsType).filter(Boolean)).size > 1) throw invalidArgument('volume_capabilities ask for different filesystem types');
  return checked;
}

/** Checks a string map (parameters, contexts) for sane sizes: they end up in JSON records and logs. */
export function checkStringMap(m: Record<string, string> | null | undefined, field: string): Record<string, string> {
  const out: Record<string, string> = {};
  let total = 0;
  for (const [k, v] of Object.entries(m ?? {})) {
    total += Buffer.byteLength(k) + Buffer.byteLength(String(v));
    if (total > MAX_MAP_BYTES) throw invalidArgument(`${field} is larger than the CSI limit of ${MAX_MAP_BYTES} bytes`);
    if (k.length === 0 || k.length > MAX_MAP_KEY_CHARS || BANNED_CHARS.test(k)) throw invalidArgument(`${field} has an invalid key ${JSON.stringify(k.slice(0, 64))}`);
    if (String(v).length > MAX_MAP_VALUE_CHARS || BANNED_CHARS.test(String(v))) throw invalidArgument(`${field}[${JSON.stringify(k)}] has an invalid value`);
    out[k] = String(v);
  }
  return out;
}

/** A path the CO gives us (staging/target): absolute, normalised, no NUL. */
export function checkPath(p: string, field: string): string {
  if (!p) throw invalidArgument(`${field} is required`);
  if (p.length > MAX_PATH_CHARS || p.includes('\0') || !p.startsWith('/')) throw invalidArgument(`${field} must be an absolute path`);
  if (p.split('/').includes('..')) throw invalidArgument(`${field} must not contain '..'`);
  // Bytes that are not UTF-8 arrive as U+FFFD: the directory made would not be the CO's.
  if (NOT_UTF8.test(p)) throw invalidArgument(`${field} is not valid UTF-8`);
  return p;
}
