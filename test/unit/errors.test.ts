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
    ['unimplemented', E.unimplemented, status.UNIMPLEMENTED],
    ['internal', E.internal, status.INTERNAL],
    ['unavailable', E.unavailable, status.UNAVAILABLE],
  ] as const)('%s carries its gRPC code and message', (_n, make, code) => {
    const e = make('volume vol-x: something');
    expect(e).toBeInstanceOf(Error);
    expect(e).toBeInstanceOf(E.CsiError);
    expect(e.code).toBe(code);
    expect(e.message).toBe('volume vol-x: something');
    expect(e.name).toBe('CsiError');
    expect(E.codeOf(e)).toBe(code);
  });

  it('codeOf maps anything that is not a CsiError to INTERNAL', () => {
    expect(E.codeOf(new Error('boom'))).toBe(status.INTERNAL);
    expect(E.codeOf('string')).toBe(status.INTERNAL);
    expect(E.codeOf(undefined)).toBe(status.INTERNAL);
    expect(E.codeOf({ code: status.NOT_FOUND })).toBe(status.INTERNAL);
  });

  it('messageOf gives the message of an Error and the string form of anything else', () => {
    expect(E.messageOf(E.notFound('gone'))).toBe('gone');
    expect(E.messageOf(new TypeError('bad'))).toBe('bad');
    expect(E.messageOf('plain')).toBe('plain');
    expect(E.messageOf(42)).toBe('42');
  });
});
