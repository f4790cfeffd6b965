// Every failure leaves the driver as a CsiError carrying the gRPC code the CSI spec
// prescribes. The request wrapper maps the rest in one place (toCsiError): a backend's
// refusal keeps its meaning, work stopped by the caller's deadline or cancellation says so,
// and anything else is INTERNAL.
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { BackendError } from './backends/backend.js';

export class CsiError extends Error {
  constructor(
    readonly code: status,
    message: string,
  ) {
    super(message);
    this.name = 'CsiError';
  }
}

export const invalidArgument = (msg: string) => new CsiError(status.INVALID_ARGUMENT, msg);
export const notFound = (msg: string) => new CsiError(status.NOT_FOUND, msg);
export const alreadyExists = (msg: string) => new CsiError(status.ALREADY_EXISTS, msg);
export const failedPrecondition = (msg: string) => new CsiError(status.FAILED_PRECONDITION, msg);
export const aborted = (msg: string) => new CsiError(status.ABORTED, msg);
export const outOfRange = (msg: string) => new CsiError(status.OUT_OF_RANGE, msg);
export const resourceExhausted = (msg: string) => new CsiError(status.RESOURCE_EXHAUSTED, msg);
export const internal = (msg: string) => new CsiError(status.INTERNAL, msg);
export const unavailable = (msg: string) => new CsiError(status.UNAVAILABLE, msg);

const BACKEND_CODES: Record<BackendError['reason'], status> = {
  'not-found': status.NOT_FOUND,
  exhausted: status.RESOURCE_EXHAUSTED,
  precondition: status.FAILED_PRECONDITION,
  invalid: status.INVALID_ARGUMENT,
  unsupported: status.UNIMPLEMENTED,
};

/**
 * Work the caller gave up on: its deadline passed or it cancelled the call, and the
 * driver stopped (killed the child process it was waiting for). Thrown by host/exec.ts.
 */
export class CallAbortedError extends Error {
  constructor(
    readonly reason: 'deadline' | 'cancelled',
    message: string,
  ) {
    super(message);
    this.name = 'CallAbortedError';
  }
}

/**
 * The kernel refused mount flags the caller asked for when they were applied to a bind mount
 * (a user-namespaced node plugin may not change locked atime flags, for one). Thrown by
 * host/mount.ts after it took the bind mount back. The flags are part of the request's
 * volume_capability and passed validation, so the request is well-formed (not
 * INVALID_ARGUMENT, "not allowed by the Plugin or has an invalid value"): it asks for what
 * this volume cannot give here, which NodePublishVolume's table calls "Exceeds
 * capabilities", FAILED_PRECONDITION.
 */
export class MountFlagsRefusedError extends Error {
  constructor(
    readonly flags: string[],
    message: string,
  ) {
    super(message);
    this.name = 'MountFlagsRefusedError';
  }
}

/**
 * A host tool the driver needs is not there to run (spawning it failed with ENOENT): an image
 * built without lvm2, a node plugin container missing a package. Thrown by host/exec.ts.
 * No retry can help and the request is not at fault; the node must be fixed first, which is
 * FAILED_PRECONDITION ("the system is not in a state required for the operation"), not the
 * INTERNAL of an unexplained failure, and the message names the tool and where it looked.
 */
export class ToolMissingError extends Error {
  constructor(
    readonly tool: string,
    searchPath: string,
  ) {
    const pkg = TOOL_PACKAGES[path.basename(tool)];
    super(
      `the host tool ${tool} is not installed where the driver runs (not found on PATH ${searchPath || '(empty)'}): ` +
        `install it${pkg ? ` (package ${pkg})` : ''} in the driver's container image, or run the driver where it is`,
    );
    this.name = 'ToolMissingError';
  }
}

/**
 * A host tool is there but the kernel will not run it (spawning failed with EACCES): a file
 * without its execute bit, or one on a filesystem mounted noexec (a hostPath, an emptyDir on
 * some nodes). Like a missing tool, no retry helps until the node or image is fixed:
 * FAILED_PRECONDITION, naming the tool and the two usual causes.
 */
export class ToolNotExecutableError extends Error {
  constructor(readonly tool: string) {
    super(
      `the host tool ${tool} is there but cannot be run (EACCES): it lacks the execute permission, or it lies on a filesystem mounted noexec; ` +
        `make it executable (chmod +x) or install it where the driver's container mounts allow running programs`,
    );
    this.name = 'ToolNotExecutableError';
  }
}

/** The Debian package that ships a tool, for the tools whose package name is not obvious. */
const TOOL_PACKAGES: Record<string, string> = {
  lvm: 'lvm2',
  rbd: 'ceph-common',
  ceph: 'ceph-common',
  'mkfs.xfs': 'xfsprogs',
  xfs_growfs: 'xfsprogs',
  xfs_freeze: 'xfsprogs',
  'mkfs.ext4': 'e2fsprogs',
  resize2fs: 'e2fsprogs',
  e2fsck: 'e2fsprogs',
  losetup: 'mount',
  blkid: 'util-linux',
  fsfreeze: 'util-linux',
};

/** The CsiError a thrown value stands for, or undefined when it is an unexpected failure (INTERNAL). */
export function toCsiError(err: unknown): CsiError | undefined {
  if (err instanceof CsiError) return err;
  if (err instanceof BackendError) return new CsiError(BACKEND_CODES[err.reason], err.message);
  if (err instanceof MountFlagsRefusedError) return new CsiError(status.FAILED_PRECONDITION, err.message);
  if (err instanceof ToolMissingError) return new CsiError(status.FAILED_PRECONDITION, err.message);
  if (err instanceof ToolNotExecutableError) return new CsiError(status.FAILED_PRECONDITION, err.message);
  if (err instanceof CallAbortedError) return new CsiError(err.reason === 'deadline' ? status.DEADLINE_EXCEEDED : status.CANCELLED, err.message);
  return undefined;
}
