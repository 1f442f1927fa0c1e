local teams = require "teams"
error("refusing to load") -- LOAD_ERROR_LINE
