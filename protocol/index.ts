/**
 * The NBKP wire protocol: constants, pure frame encoders/decoders, and an incremental reader.
 * See protocol/README.md for the format in words.
 */
export * from './constants.js';
export * from './errors.js';
export * from './frames.js';
export * from './reader.js';
export { nameProblem } from './names.js';
