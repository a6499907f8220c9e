"""jaxmetric's private machinery: input validation, numerics, the one module that calls
collectives, the front door, the pairs object, the engine and triplet arithmetic. Nothing
here is public API; the public modules import from here, never the other way round."""
