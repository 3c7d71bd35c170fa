int parser(void) { return sizeof "parser"; } /* parser */
