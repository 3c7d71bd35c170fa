int lexer(void) { return sizeof "lexer"; } /* lexer */
