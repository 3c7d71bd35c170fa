# "Links" OBJECTS (a comma-separated list) into OUT.
comma := ,
objects := $(subst $(comma), ,$(OBJECTS))
all:
	$(file >$(OUT),program from $(words $(objects)) objects:)
	$(foreach o,$(objects),$(file >>$(OUT),  $(file <$(o))))
