// `npm run lint` (npm test runs it with --max-warnings 0): ESLint's and typescript-eslint's
// recommended rules, which find bugs (unused code, unsafe patterns), not style.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  // Built output and code generated from proto/csi.proto (proto/gen-types.sh).
  { ignores: ['dist/', 'node_modules/', 'proto/gen/'] },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    rules: {
      // As tsc's noUnusedParameters: a leading underscore marks a parameter or binding kept
      // on purpose (a callback's signature, a field split off with ...rest).
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
      // A let that a closure defined earlier reads (e.g. a stop handler set up before the
      // thing it stops exists) cannot be a const.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
    },
  },
  {
    // Plain Node scripts (deploy/image/tscsi.mjs, this file).
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', URL: 'readonly' } },
  },
  {
    // Tests walk JSON from kubectl and the API server and assert its shape; typing every
    // manifest would add nothing the assertions do not already check.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
);
