/**
 * The NBKP wire protocol: constants, pure frame encoders/decoders, and an incremental reader.
 * See protocol/README.md for the format in words.
 */
export * from './constants.js';
export * from './errors.js';
export * from './frames.js';
export * from './reader.js';
export { MAX_NAME_BYTES, nameProblem, isValidName } from './names.js';
