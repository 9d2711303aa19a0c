require "ereject";
if size :over 10 { ereject "too big"; }
