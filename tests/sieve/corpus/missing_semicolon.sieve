require "fileinto";

if header :is "to" "x" {
  fileinto "a"
}
