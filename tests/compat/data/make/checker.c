int checker(void) { return sizeof "checker"; } /* checker */
