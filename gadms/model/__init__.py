"""The GA-DMS model: open_clip backbone, GASS, dual masking, interaction encoder, losses, training step."""
