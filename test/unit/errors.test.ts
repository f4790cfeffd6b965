import { describe, it, expect } from 'vitest';
import { status } from '@grpc/grpc-js';
import * as E from '../../driver/errors.js';

describe('errors', () => {
  it.each([
    ['invalidArgument', E.invalidArgument, status.INVALID_ARGUMENT],
    ['notFound', E.notFound, status.NOT_FOUND],
    ['alreadyExists', E.alreadyExists, status.ALREADY_EXISTS],
    ['failedPrecondition', E.failedPrecondition, status.FAILED_PRECONDITION],
    ['aborted', E.aborted, status.ABORTED],
    ['outOfRange', E.outOfRange, status.OUT_OF_RANGE],
    ['resourceExhausted', E.resourceExhausted, status.RESOURCE_EXHAUSTED],
    ['internal', E.internal, status.INTERNAL],
    ['unavailable', E.unavailable, status.UNAVAILABLE],
  ] as const)('%s carries its gRPC code and message', (_n, make, code) => {
    const e = make('volume vol-x: something');
    expect(e).toBeInstanceOf(Error);
    expect(e).toBeInstanceOf(E.CsiError);
    expect(e.code).toBe(code);
    expect(e.message).toBe('volume vol-x: something');
    expect(e.name).toBe('CsiError');
    expect(E.toCsiError(e)).toBe(e);
  });

  it('toCsiError knows nothing that is not a CsiError, BackendError or a stopped call (the server answers INTERNAL)', () => {
    expect(E.toCsiError(new Error('boom'))).toBeUndefined();
    expect(E.toCsiError('string')).toBeUndefined();
    expect(E.toCsiError(undefined)).toBeUndefined();
    expect(E.toCsiError({ code: status.NOT_FOUND })).toBeUndefined();
  });
});
