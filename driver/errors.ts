// Every failure leaves the driver as a CsiError carrying the gRPC code the CSI spec
// prescribes; anything else is mapped to INTERNAL by the request wrapper.
import { status } from '@grpc/grpc-js';

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
export const unimplemented = (msg: string) => new CsiError(status.UNIMPLEMENTED, msg);
export const internal = (msg: string) => new CsiError(status.INTERNAL, msg);
export const unavailable = (msg: string) => new CsiError(status.UNAVAILABLE, msg);

/** The status code for any thrown value: CsiErrors keep theirs, everything else is INTERNAL. */
export function codeOf(err: unknown): status {
  return err instanceof CsiError ? err.code : status.INTERNAL;
}

export function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
