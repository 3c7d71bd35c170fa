# "Compiles" SRC into OBJ: the object names its source and its size.
all:
	$(file >$(OBJ),object of $(notdir $(SRC)) ($(words $(file <$(SRC))) words))
