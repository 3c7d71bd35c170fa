int emitter(void) { return sizeof "emitter"; } /* emitter */
